"""Wikipedia from a multistream dump (scratchgpt.plumbing.sources.dump), on small dumps these tests
build in Wikimedia's layout: a header stream, streams of pages with real wikitext markup, a
closing stream, and the bz2 index of stream offsets."""

import bz2
import gzip
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from scratchgpt.plumbing.corpus import corpus_files, documents
from scratchgpt.plumbing.datasets import DataCorrupt, verify_dataset
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import DatasetParams, DumpParams, HttpParams
from scratchgpt.plumbing.sources import dump as wikidump
from scratchgpt.plumbing.sources.dump import WikiDumpError, clean, extract, read_shard, stream_offsets
from scripted_server import Reply

BASE = "https://test.wikipedia.org"
HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>testwiki</dbname>
    <base>https://test.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.44.0</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""

APRIL = """{{Short description|Fourth month of the year}}
{{Infobox month|name=April|days={{#expr:30}}}}
'''April''' is the fourth [[month]] of the year in the [[Gregorian calendar|Gregorian]] and
[[Julian calendar]]s.<ref name="cal">{{cite book|title=Calendars}}</ref> It has 30 days.<!-- check -->
[[File:Cherry blossoms.jpg|thumb|Blossoms in ''April'']]

== History ==
The name may come from the [[Latin]] ''aperire'', "to open".<ref>Some source.</ref>

=== Events ===
{| class="wikitable"
! Day !! Event
|-
| 1 || April Fools' Day
|}
* [[Easter]] often falls in April.

[[Category:Months]]
[[Category:April| ]]"""

APRIL_TEXT = """April is the fourth month of the year in the Gregorian and
Julian calendars. It has 30 days.
History
The name may come from the Latin aperire, "to open".
Events
Easter often falls in April."""


def page(pageid: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    redirect_tag = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return f"""  <page>
    <title>{escape(title)}</title>
    <ns>{ns}</ns>
    <id>{pageid}</id>
{redirect_tag}    <revision>
      <id>{pageid * 10 + 1}</id>
      <timestamp>2026-01-01T00:00:00Z</timestamp>
      <contributor><username>Editor</username><id>7</id></contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>
      <sha1>0</sha1>
    </revision>
  </page>
"""


def filler(i: int) -> str:
    return (
        f"'''Topic {i}''' is a [[subject]] about the number {i}.<ref>r{i}</ref> {{{{Citation needed}}}}\n"
        f"== Details ==\nIt is written about in [[book]]s and [[Article {i}|articles]]. " * 2
    )


PAGES = [
    page(1, "April", APRIL),
    page(2, "Apr", "#REDIRECT [[April]]", redirect="April"),
    page(3, "Talk:April", "Is April a month?", ns=1),
    page(
        4, "Mercury", "'''Mercury''' may refer to:\n* [[Mercury (planet)]]\n* [[Mercury (element)]]\n{{disambiguation}}"
    ),
    page(5, "Stub", "Tiny."),
    page(6, "Zürich", "'''Zürich''' is a city in [[Switzerland]] with about 400,000 people. " * 3),
    *(page(10 + i, f"Topic {i}", filler(i)) for i in range(40)),
]


def make_dump(folder: Path, pages: list[str] = PAGES, per_stream: int = 3, header: str = HEADER) -> tuple[Path, Path]:
    """A multistream dump of ``pages`` and its index, in Wikimedia's layout."""
    names = wikidump.dump_names("testwiki", "20260101")
    dump, index = folder / names["dump"], folder / names["index"]
    streams = [bz2.compress(header.encode())]
    lines = []
    offset = len(streams[0])
    for i in range(0, len(pages), per_stream):
        group = pages[i : i + per_stream]
        for p in group:
            pageid = p.split("<id>")[1].split("<")[0]
            title = p.split("<title>")[1].split("<")[0]
            lines.append(f"{offset}:{pageid}:{title}\n")
        streams.append(bz2.compress("".join(group).encode()))
        offset += len(streams[-1])
    streams.append(bz2.compress(b"</mediawiki>\n"))
    dump.write_bytes(b"".join(streams))
    index.write_bytes(bz2.compress("".join(lines).encode()))
    return dump, index


def shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def every_article(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    return [a for s in manifest["shards"] for a in read_shard(out / s["file"])]


def test_clean_keeps_prose_and_headings_only():
    assert clean(APRIL) == APRIL_TEXT


def test_extract_keeps_articles_in_order_with_their_ids(tmp_path):
    dump, index = make_dump(tmp_path)
    manifest = extract(dump, index, tmp_path / "out", BASE, workers=1, streams_per_shard=4, min_chars=40)
    found = every_article(tmp_path / "out")
    # no redirect, talk page, disambiguation page or page under min_chars
    assert [a["title"] for a in found][:3] == ["April", "Zürich", "Topic 0"] and len(found) == 42
    april = found[0]
    assert april == {
        "title": "April",
        "pageid": 1,
        "revid": 11,
        "url": "https://test.wikipedia.org/wiki/April",
        "text": APRIL_TEXT,
    }
    assert found[1]["url"] == "https://test.wikipedia.org/wiki/Z%C3%BCrich"
    assert manifest["articles"] == 42 and manifest["streams"] == 16
    assert len(manifest["shards"]) == 4 and sum(s["articles"] for s in manifest["shards"]) == 42
    assert stream_offsets(index)[0] == len(bz2.compress(HEADER.encode()))


def test_output_is_the_same_for_any_number_of_workers(tmp_path):
    dump, index = make_dump(tmp_path)
    extract(dump, index, tmp_path / "one", BASE, workers=1, streams_per_shard=2)
    extract(dump, index, tmp_path / "two", BASE, workers=2, streams_per_shard=2)
    assert shards(tmp_path / "one") == shards(tmp_path / "two")
    first = tmp_path / "one" / "articles-00000.jsonl.gz"
    assert gzip.decompress(first.read_bytes()).startswith(b'{"title": "April"')


def test_an_interrupted_run_continues_from_its_complete_shards(tmp_path, monkeypatch):
    dump, index = make_dump(tmp_path)
    extract(dump, index, tmp_path / "whole", BASE, workers=1, streams_per_shard=2)
    out = tmp_path / "out"
    extract(dump, index, out, BASE, workers=1, streams_per_shard=2)
    for name in ("articles-00005.jsonl.gz", "articles-00006.jsonl.gz", "articles-00007.jsonl.gz", "manifest.json"):
        (out / name).unlink()  # as a run killed after shard 4 leaves it
    extracted = []
    write = wikidump._write_shard
    monkeypatch.setattr(wikidump, "_write_shard", lambda job: extracted.append(Path(job.path).name) or write(job))
    extract(dump, index, out, BASE, workers=1, streams_per_shard=2)
    assert extracted == ["articles-00005.jsonl.gz", "articles-00006.jsonl.gz", "articles-00007.jsonl.gz"]
    assert shards(out) == shards(tmp_path / "whole")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sample_is_the_first_articles_every_time(tmp_path, workers):
    dump, index = make_dump(tmp_path)
    every = [a["title"] for a in every_article(_run(dump, index, tmp_path / "all", 1))]
    out = tmp_path / "sample"
    manifest = extract(dump, index, out, BASE, workers=workers, streams_per_shard=2, max_articles=9)
    assert [a["title"] for a in every_article(out)] == every[:9] and manifest["articles"] == 9
    assert manifest["shards"][-1]["file"].endswith(".sample.jsonl.gz")
    bigger = extract(dump, index, out, BASE, workers=workers, streams_per_shard=2, max_articles=20)
    assert [a["title"] for a in every_article(out)] == every[:20] and bigger["articles"] == 20
    assert len(list(out.glob("*.sample.jsonl.gz"))) == 1
    by_bytes = extract(dump, index, tmp_path / "bytes", BASE, workers=workers, streams_per_shard=2, max_bytes=2000)
    assert by_bytes["text_bytes"] >= 2000 > by_bytes["text_bytes"] - len(every_article(tmp_path / "bytes")[-1]["text"])


def _run(dump, index, out, workers):
    extract(dump, index, out, BASE, workers=workers, streams_per_shard=2)
    return out


def test_a_corrupt_stream_is_named_and_nothing_partial_is_kept(tmp_path):
    dump, index = make_dump(tmp_path)
    offsets = stream_offsets(index)
    data = bytearray(dump.read_bytes())
    bad = offsets[5] + 20
    data[bad : bad + 8] = b"\x00" * 8
    dump.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(WikiDumpError, match=rf"the bz2 stream at byte {offsets[5]:,} is corrupt"):
        extract(dump, index, out, BASE, workers=1, streams_per_shard=2)
    left = sorted(p.name for p in out.iterdir())
    assert "articles-00002.jsonl.gz" not in left and "manifest.json" not in left  # stream 5 is in shard 2
    assert not [n for n in left if n.endswith(".tmp") or n.startswith(".")], left


def test_an_index_that_is_not_one_is_named(tmp_path):
    bad = tmp_path / "index.txt.bz2"
    bad.write_bytes(bz2.compress(b"not an index line\n"))
    with pytest.raises(WikiDumpError, match="line 1: expected offset:pageid:title"):
        stream_offsets(bad)
    (tmp_path / "plain.bz2").write_bytes(b"plain text")
    with pytest.raises(WikiDumpError, match="not a readable bz2 index"):
        stream_offsets(tmp_path / "plain.bz2")


# ---------------------------------------------------------------------------------------------
# The dump downloaded from a server on 127.0.0.1, checked against its sha1sums file

DATE = "20260101"


def published(tmp_path: Path, wrong: str | None = None) -> dict[str, bytes]:
    """The files Wikimedia publishes for a dump: the dump, its index and the sha1sums file."""
    import hashlib

    (tmp_path / "built").mkdir()
    dump, index = make_dump(tmp_path / "built")
    files = {dump.name: dump.read_bytes(), index.name: index.read_bytes()}
    sums = "".join(
        f"{'0' * 40 if name == wrong else hashlib.sha1(data).hexdigest()}  {name}\n" for name, data in files.items()
    )
    files[wikidump.dump_names("testwiki", DATE)["sha1sums"]] = sums.encode()
    return files


def dump_params(base_url: str, **changes) -> DumpParams:
    return DumpParams(
        wiki="testwiki", date=DATE, base_url=base_url, min_chars=40, streams_per_shard=4, workers=1, **changes
    )


def serve(server, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        server.route(f"/testwiki/{DATE}/{name}", Reply(data))  # served as often as asked


def test_a_dump_from_a_server_becomes_shards_that_prepare_reads(tmp_path, server):
    files = published(tmp_path)
    serve(server, files)
    p = dump_params(server.url("/").rstrip("/"))
    out = tmp_path / "raw" / "wikipedia"
    report = wikidump.build_dataset(p, out, HttpClient(), None, tmp_path / "cache")
    assert report == {
        "manifest.json": "42 articles in 4 shard(s) from testwiki-20260101-pages-articles-multistream.xml.bz2"
    }
    manifest = json.loads((out / "manifest.json").read_text())
    dump_name = wikidump.dump_names("testwiki", DATE)["dump"]
    sha1 = files[wikidump.dump_names("testwiki", DATE)["sha1sums"]].decode().split()[0]
    assert manifest["dump_checksum"] == f"sha1:{sha1}" and manifest["dump"] == dump_name
    cached = tmp_path / "cache" / "wikidumps" / f"testwiki-{DATE}"  # extracted shards keyed by content and settings
    assert [d.name for d in cached.glob("shards-*")] == [f"shards-{sha1[:12]}-{wikidump.settings_digest(p)}"]
    assert sorted(p.name for p in out.iterdir()) == [*(f"articles-0000{i}.jsonl.gz" for i in range(4)), "manifest.json"]
    # the article URLs come from the dump's <base>; prepare reads one document per article
    assert next(read_shard(out / "articles-00000.jsonl.gz"))["url"] == "https://test.wikipedia.org/wiki/April"
    docs = ["".join(parts) for parts in documents(corpus_files(out))]
    assert len(docs) == 42 and docs[0] == APRIL_TEXT
    verify_dataset("wikipedia", DatasetParams(source="dump", dump=p), out)
    # again: nothing downloaded twice, nothing extracted twice
    again = tmp_path / "again"
    wikidump.build_dataset(p, again, HttpClient(), None, tmp_path / "cache")
    assert len(server.hits(f"/testwiki/{DATE}/{dump_name}")) == 1
    assert shards(again) == shards(out)
    (out / "articles-00002.jsonl.gz").write_bytes(b"changed")
    with pytest.raises(DataCorrupt, match="articles-00002.jsonl.gz: missing or changed"):
        verify_dataset("wikipedia", DatasetParams(source="dump", dump=p), out)


def test_a_checksum_mismatch_deletes_the_file_and_keeps_nothing(tmp_path, server):
    names = wikidump.dump_names("testwiki", DATE)
    serve(server, published(tmp_path, wrong=names["dump"]))
    out = tmp_path / "raw" / "wikipedia"
    with pytest.raises(WikiDumpError, match=rf"{names['dump']} from .*: sha1 [0-9a-f]{{40}} does not match 0{{40}}"):
        wikidump.build_dataset(dump_params(server.url("/").rstrip("/")), out, HttpClient(), None, tmp_path / "cache")
    cache = tmp_path / "cache" / "wikidumps" / f"testwiki-{DATE}"
    assert not (cache / names["dump"]).exists() and not out.exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no partial download left"


def test_a_dump_from_the_mirror(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in published(tmp_path).items():
        (mirror / name).write_bytes(data)
    offline = HttpClient(HttpParams(retries=0, connect_timeout=2))
    out = tmp_path / "out"
    wikidump.build_dataset(dump_params("http://127.0.0.1:9"), out, offline, str(mirror), tmp_path / "cache")
    assert json.loads((out / "manifest.json").read_text())["articles"] == 42


# ---------------------------------------------------------------------------------------------
# Links: only a namespace prefix drops one


@pytest.mark.parametrize(
    ("wikitext", "text"),
    [
        ("The [[media]] reported it.", "The media reported it."),
        ("[[image]]s of the war", "images of the war"),
        ("see [[Category]] theory", "see Category theory"),
        ("A [[File:Foo.jpg|thumb|caption]] photo.", "A photo."),
        ("Physics.[[Category:Physics]]", "Physics."),
        ("See the [[:Category:Physics|physics categories]].", "See the physics categories."),
        ("See [[:Category:Physics]].", "See Category:Physics."),
        ("A [[Image:x.png]] map and [[image:y.png|left]] here.", "A map and here."),
        ("[[Media:Anthem.ogg]] The anthem.", "The anthem."),
    ],
)
def test_a_link_keeps_its_text_unless_a_namespace_prefix_drops_it(wikitext, text):
    assert clean(wikitext) == text


GERMAN = HEADER.replace(">File<", ">Datei<").replace(">Category<", ">Kategorie<")


def test_the_wikis_own_namespace_names_drop_their_links(tmp_path):
    text = "'''Berlin''' ist eine [[Stadt]].[[Datei:Berlin.png|mini|Bild]] [[Kategorie:Stadt]] [[Datei]]en."
    dump, index = make_dump(tmp_path, [page(1, "Berlin", text)], header=GERMAN)
    extract(dump, index, tmp_path / "out", BASE, workers=1)
    assert [a["text"] for a in every_article(tmp_path / "out")] == ["Berlin ist eine Stadt. Dateien."]


# ---------------------------------------------------------------------------------------------
# Bad dumps and indexes: one WikiDumpError line naming the file and the byte offset


def one_line_error(excinfo, *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and all(part in message for part in parts), message
    return message


def rewrite_index(index: Path, change) -> None:
    lines = bz2.decompress(index.read_bytes()).decode().splitlines(keepends=True)
    index.write_bytes(bz2.compress("".join(change(lines)).encode()))


STALE = [page(10 + i, f"Topic {i}", "Tiny.") if i < 9 else p for i, p in enumerate(PAGES[6:], start=0)]


def test_a_truncated_stale_dump_fails_and_leaves_nothing_the_good_dump_trusts(tmp_path):
    """A stale dump (other articles in its first streams) cut in the middle of its last page
    stream fails in one line; the good dump in its place then gives what a fresh cache gives."""
    dump, index = make_dump(tmp_path, PAGES[:6] + STALE)
    offsets = stream_offsets(index)
    whole = dump.read_bytes()
    dump.write_bytes(whole[: offsets[-1] + (len(whole) - offsets[-1]) // 2])
    out = tmp_path / "out"
    with pytest.raises(WikiDumpError) as excinfo:
        extract(dump, index, out, BASE, workers=1, streams_per_shard=2, min_chars=40)
    one_line_error(excinfo, str(dump), f"the bz2 stream at byte {offsets[-1]:,} is truncated")
    assert (out / "articles-00000.jsonl.gz").is_file()  # complete shards of the stale dump stay, for now
    make_dump(tmp_path)  # the good dump and index, in the same place
    manifest = extract(dump, index, out, BASE, workers=1, streams_per_shard=2, min_chars=40)
    fresh = extract(dump, index, tmp_path / "fresh", BASE, workers=1, streams_per_shard=2, min_chars=40)
    assert manifest["articles"] == fresh["articles"] == 42
    assert shards(out) == shards(tmp_path / "fresh")


LAUGHS = HEADER.replace(
    "<mediawiki ",
    '<?xml version="1.0"?>\n<!DOCTYPE mediawiki [\n  <!ENTITY lol "lol">\n'
    + "".join(f'  <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n' for i in range(1, 10))
    + "]>\n<mediawiki ",
).replace("<sitename>Wikipedia</sitename>", "<sitename>&lol9;</sitename>")


def test_a_dump_that_declares_entities_is_refused(tmp_path):
    dump, index = make_dump(tmp_path, header=LAUGHS)
    with pytest.raises(WikiDumpError) as excinfo:
        extract(dump, index, tmp_path / "out", BASE, workers=1)
    one_line_error(excinfo, str(dump), "the header stream at byte 0 declares a DOCTYPE or entity")


BROKEN = {
    "malformed": "  <page>\n    <title>Bad</title>\n    <ns>0</ns>\n    <id>90</id>\n"
    "    <revision><id>901</id><text>oops</revision>\n  </page>\n",
    "truncated": "  <page>\n    <title>Cut</title>\n    <ns>0</ns>\n    <id>90</id>\n    <revision>\n      <text>The",
}


@pytest.mark.parametrize(("kind", "what"), [("malformed", "is not XML of pages"), ("truncated", "has no </page>")])
def test_broken_xml_in_a_stream_is_named(tmp_path, kind, what):
    dump, index = make_dump(tmp_path, [*PAGES[:8], BROKEN[kind], *PAGES[8:]])  # the 3rd stream's last page
    with pytest.raises(WikiDumpError) as excinfo:
        extract(dump, index, tmp_path / "out", BASE, workers=1)
    one_line_error(excinfo, str(dump), f"the stream at byte {stream_offsets(index)[2]:,}", what)


def _past_the_end(lines: list[str]) -> list[str]:
    return [*lines, f"{10**7}:99:Beyond\n"]


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (_past_the_end, f"stream offset {10**7:,} is past the end of"),
        (lambda lines: [*lines[:4], "9" * 5000 + ":99:Long\n", *lines[4:]], "line 5: expected offset:pageid:title"),
        (lambda lines: [*lines[6:9], *lines[:6], *lines[9:]], "line 4: stream offset"),
    ],
    ids=["past-the-end", "5000-digits", "not-increasing"],
)
def test_a_bad_index_offset_is_named(tmp_path, change, what):
    dump, index = make_dump(tmp_path)
    rewrite_index(index, change)
    with pytest.raises(WikiDumpError) as excinfo:
        extract(dump, index, tmp_path / "out", BASE, workers=1)
    one_line_error(excinfo, str(index), what)


def test_an_index_that_skips_streams_or_pages_is_refused(tmp_path):
    dump, index = make_dump(tmp_path)
    offsets = stream_offsets(index)
    every_other = {str(o) for o in offsets[1::2]}
    rewrite_index(index, lambda lines: [line for line in lines if line.split(":")[0] not in every_other])
    with pytest.raises(WikiDumpError) as excinfo:
        extract(dump, index, tmp_path / "out", BASE, workers=1)
    one_line_error(excinfo, str(dump), f"byte {offsets[0]:,} ends at byte {offsets[1]:,}", "the index skips a stream")
    make_dump(tmp_path)
    rewrite_index(index, lambda lines: lines[:4] + lines[5:])  # the 2nd stream's 2nd page unlisted
    with pytest.raises(WikiDumpError) as excinfo:
        extract(dump, index, tmp_path / "out", BASE, workers=1)
    one_line_error(excinfo, f"the stream at byte {offsets[1]:,} holds 3 page(s) (ids 4 to 6), not the 2")


# ---------------------------------------------------------------------------------------------
# Bounded: memory measured in a process of its own (VmHWM: its peak resident memory)

PEAK = """
import json, re, sys
from scratchgpt.plumbing.sources.dump import WikiDumpError, extract
try:
    manifest = extract(*sys.argv[1:4], "https://test.wikipedia.org", workers=1, min_chars=40)
    found = {"articles": manifest["articles"], "skipped": manifest["skipped_large_pages"]}
except WikiDumpError as e:
    found = {"error": str(e)}
found["peak_mb"] = int(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read())[1]) / 1024
print(json.dumps(found))
"""


def peak(dump: Path, index: Path, out: Path) -> dict:
    run = subprocess.run([sys.executable, "-c", PEAK, str(dump), str(index), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_a_bz2_bomb_is_refused_within_bounded_memory(tmp_path):
    """A ~1 KB stream that expands to 1 GiB stops at max_stream_bytes, in one line."""
    dump, index = make_dump(tmp_path)
    offsets = stream_offsets(index)
    bomb = bz2.BZ2Compressor()
    raw = b"".join(bomb.compress(bytes(16 << 20)) for _ in range(64)) + bomb.flush()
    assert len(raw) < 2000
    data = dump.read_bytes()
    dump.write_bytes(data[: offsets[2]] + raw + data[offsets[3] :])
    shift = len(raw) - (offsets[3] - offsets[2])
    rewrite_index(index, lambda lines: [_shifted(line, offsets[2], shift) for line in lines])
    found = peak(dump, index, tmp_path / "out")
    assert found["error"] == (
        f"{dump}: the bz2 stream at byte {offsets[2]:,} decompresses to more than max_stream_bytes"
        f" ({wikidump.MAX_STREAM_BYTES:,} bytes)"
    )
    assert found["peak_mb"] < 300, found


def _shifted(line: str, after: int, shift: int) -> str:
    offset, _, rest = line.partition(":")
    return f"{int(offset) + shift if int(offset) > after else offset}:{rest}"


def test_a_huge_page_is_skipped_unparsed_within_bounded_memory(tmp_path):
    """A 64 MiB page is listed and left out before any parse; the other articles stay."""
    huge = page(99, "Huge", "'''Huge''' " + "a" * (64 << 20))
    dump, index = make_dump(tmp_path, [*PAGES[:7], huge, *PAGES[7:]])
    found = peak(dump, index, tmp_path / "out")
    assert found["articles"] == 42 and found["peak_mb"] < 300, found
    assert found["skipped"] == [{"pageid": 99, "title": "Huge", "bytes": len(huge.strip().encode())}]


# ---------------------------------------------------------------------------------------------
# No temporary file survives


def test_a_run_removes_the_temporary_files_of_a_killed_one(tmp_path):
    dump, index = make_dump(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".articles-00000.jsonl.gz.k3x9_2ab.tmp").write_bytes(b"\x1f\x8b half")
    extract(dump, index, out, BASE, workers=1)
    assert not list(out.glob(".*")), list(out.glob(".*"))


def stuck_write(job):
    """A shard writer that stops for good after its first article (run in a pool's worker)."""

    def records():
        yield {"title": "A", "text": "a"}
        time.sleep(60)

    return wikidump.write_shard(job.path, records())


def test_an_interrupt_leaves_no_temporary_file_of_the_workers(tmp_path, monkeypatch):
    dump, index = make_dump(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(wikidump, "_write_shard", stuck_write)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    def when_writing():
        deadline = time.monotonic() + 60
        while not list(out.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        threading.Thread(target=when_writing, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            extract(dump, index, out, BASE, workers=2, streams_per_shard=2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not list(out.glob(".*.tmp")) and not list(out.glob("articles-*"))
