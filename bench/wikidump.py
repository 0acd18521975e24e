"""Wikipedia dump extraction (scratchgpt.plumbing.sources.dump) and the shards' tokenization
(prepare: scratchgpt.plumbing.shard_writer.write_shards): speed per core and with every core, and peak
memory at two dump sizes, on a generated multistream dump with real wikitext markup.

Each run is its own process (``spawn`` pool workers included), so the peak resident memory
printed is the largest of that run's processes. One worker is the baseline the all-cores run
is compared with, in the same invocation. prepare runs as it does on a real dump's shards: split by
file across processes (the generated text compresses far better than real text, so its gzipped
shards are smaller than the size at which write_shards starts processes by itself).

    python bench/wikidump.py [--mb 200] [--scale 10] [--workers 0] [--mirror ../shared/data]
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>benchwiki</dbname>
    <base>https://bench.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.44.0</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""

# An article of about 4 KB of wikitext, in the proportions of a real one: infobox, references,
# links, a table, a file, headings, categories.
ARTICLE = """{{{{Short description|Topic number {i}}}}}
{{{{Infobox thing|name=Topic {i}|established={{{{start date|19{j:02d}|1|1}}}}|area={i} km2}}}}
'''Topic {i}''' is a [[subject]] studied in [[science|the sciences]] since 19{j:02d}.<ref name="a{i}">
{{{{cite web|url=https://example.org/{i}|title=Topic {i}}}}}</ref>
It is known for [[Property (philosophy)|its properties]] and for the ''{i} rule''.<ref>Smith, J. (2001).
''Topics''. p. {j}.</ref>
[[File:Topic {i}.jpg|thumb|right|A picture of ''topic {i}'']]

== History ==
The first account of topic {i} appears in a [[manuscript]] of the [[Middle Ages]]. Later writers
such as [[Isaac Newton]] and [[Émilie du Châtelet]] returned to it.<ref>{{{{cite book|title=History}}}}</ref>
{{{{Main|History of topic {i}}}}}

=== Modern work ===
{{| class="wikitable"
! Year !! Result
|-
| 1900 || First measurement
|-
| 2000 || Second measurement
|}}
In the [[20th century]], [[experiment]]s measured it {j} times.<!-- needs a source -->

== See also ==
* [[Topic {k}]]
* [[List of topics]]

== References ==
{{{{Reflist}}}}

[[Category:Topics]]
[[Category:Things established in 19{j:02d}]]
"""


def page(i: int) -> str:
    text = ARTICLE.format(i=i, j=i % 100, k=i + 1) * 2
    return (
        f"  <page>\n    <title>Topic {i}</title>\n    <ns>0</ns>\n    <id>{i}</id>\n    <revision>\n"
        f"      <id>{i * 10}</id>\n      <timestamp>2026-01-01T00:00:00Z</timestamp>\n"
        f"      <contributor><username>B</username><id>1</id></contributor>\n"
        f"      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
        f'      <text bytes="{len(text)}" xml:space="preserve">{escape(text)}</text>\n'
        f"      <sha1>0</sha1>\n    </revision>\n  </page>\n"
    )


def make_dump(folder: Path, megabytes: float) -> tuple[Path, Path, int]:
    """A multistream dump of about ``megabytes`` MB of XML (100 pages per stream); its size in bytes."""
    dump, index = folder / "bench-pages-articles-multistream.xml.bz2", folder / "bench-index.txt.bz2"
    target, written, i = megabytes * 1e6, 0, 0
    lines = bz2.BZ2Compressor()  # the index, compressed as it grows: this process stays small
    with open(dump, "wb") as out, open(index, "wb") as index_out:
        head = bz2.compress(HEADER.encode())
        out.write(head)
        offset = len(head)
        while written < target:
            pages = [page(i + n) for n in range(100)]
            xml = "".join(pages).encode()
            block = bz2.compress(xml, 9)
            index_out.write(lines.compress("".join(f"{offset}:{i + n}:Topic {i + n}\n" for n in range(100)).encode()))
            out.write(block)
            offset, written, i = offset + len(block), written + len(xml), i + 100
        out.write(bz2.compress(b"</mediawiki>\n"))
        index_out.write(lines.flush())
    return dump, index, written


# This process's own peak: VmHWM starts afresh at exec, whereas ru_maxrss keeps the RSS of the
# process that started it (which would count the bench's own memory in).
PEAK = """
import resource
def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
"""

RUN = (
    PEAK
    + """
import json, sys, time
from scratchgpt.plumbing.sources.dump import extract
start = time.perf_counter()
m = extract(sys.argv[1], sys.argv[2], sys.argv[3], workers=int(sys.argv[4]), streams_per_shard=10)
peak = max(hwm(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": time.perf_counter() - start, "articles": m["articles"], "peak_kb": peak}))
"""
)


PREPARE = (
    PEAK
    + """
import json, sys, time
from pathlib import Path
from scratchgpt.book.tokenizer import GPT2Tokenizer
from scratchgpt.plumbing.corpus import corpus_files
from scratchgpt.plumbing.shard_writer import write_shards
start = time.perf_counter()
files = corpus_files(Path(sys.argv[2]))
m = write_shards(files, GPT2Tokenizer(sys.argv[1]), sys.argv[3], workers=int(sys.argv[4]), pool_bytes=0)
peak = max(hwm(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
tokens = sum(s["tokens"] for s in m["splits"].values())
chars = sum(s["characters"] for s in m["splits"].values())
print(json.dumps({"seconds": time.perf_counter() - start, "tokens": tokens, "chars": chars, "peak_kb": peak}))
"""
)


def child(script: str, *args: object) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(dump: Path, index: Path, out: Path, workers: int) -> tuple[float, int, float]:
    """(seconds, articles, peak RSS in MB of the largest process) of one extraction."""
    result = child(RUN, dump, index, out, workers)
    return result["seconds"], result["articles"], result["peak_kb"] / 1024


def prepare(bpe: Path, shards: Path, out: Path, workers: int) -> tuple[str, float]:
    """One tokenization of the extracted shards: a line of the report, and its seconds."""
    r = child(PREPARE, bpe, shards, out, workers)
    line = (
        f"  prepare, {workers} worker(s): {r['seconds']:.1f} s, {r['tokens']:,} tokens, "
        f"{r['chars'] / 1e6 / r['seconds']:.1f} M characters/s, peak RSS {r['peak_kb'] / 1024:.0f} MB"
    )
    return line, r["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200, help="XML size of the dump (MB, uncompressed)")
    parser.add_argument("--scale", type=float, default=10, help="the second, larger dump: this many times --mb")
    parser.add_argument("--workers", type=int, default=0, help="the all-cores run's processes (0: every core)")
    parser.add_argument("--mirror", default=os.environ.get("SCRATCHGPT_MIRROR", "../shared/data"))
    args = parser.parse_args()
    bpe = Path(args.mirror) / "gpt2"
    cores = args.workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        for size in (args.mb, args.mb * args.scale):
            where = folder / f"{size:g}"
            where.mkdir()
            started = time.perf_counter()
            dump, index, xml_bytes = make_dump(where, size)
            built = time.perf_counter() - started
            print(
                f"dump of {xml_bytes / 1e6:.0f} MB XML, {dump.stat().st_size / 1e6:.1f} MB bz2 (built in {built:.0f} s)"
            )
            for workers in dict.fromkeys((1, cores)):
                if size != args.mb and workers == 1:
                    continue  # the large dump: every core only (memory is the point there)
                seconds, articles, peak = run(dump, index, where / f"out-{workers}", workers)
                rate = xml_bytes / 1e6 / seconds
                rows.append((size, workers, seconds, articles, rate, peak))
                print(
                    f"  extract, {workers} worker(s): {seconds:.1f} s, {articles:,} articles, {rate:.1f} MB/s of XML "
                    f"({rate / workers:.1f} per worker), peak RSS {peak:.0f} MB",
                    flush=True,
                )
            times = {}
            for workers in dict.fromkeys((1, cores)):
                line, times[workers] = prepare(bpe, where / f"out-{cores}", where / f"shards-{workers}", workers)
                print(line, flush=True)
            print(f"  prepare's speed-up with {cores} workers: {times[1] / times[cores]:.2f}x", flush=True)
        base = next(r for r in rows if r[1] == 1)
        best = next((r for r in rows if r[0] == args.mb and r[1] == cores), base)
        large = rows[-1]
        print(f"extraction's speed-up with {cores} workers: {base[2] / best[2]:.2f}x")
        print(f"extraction's peak RSS at {args.scale:g}x the size: {large[5] / best[5]:.2f}x that at 1x")


if __name__ == "__main__":
    main()
