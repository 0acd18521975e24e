"""Wikipedia from a multistream dump (scratchgpt.plumbing.wikidump), on small dumps these tests
build in Wikimedia's layout: a header stream, streams of pages with real wikitext markup, a
closing stream, and the bz2 index of stream offsets."""

import bz2
import gzip
import json
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from scratchgpt.book.shards import corpus_files, documents
from scratchgpt.plumbing import wikidump
from scratchgpt.plumbing.download import DataCorrupt, verify_dataset
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.params import DatasetParams, DumpParams, HttpParams
from scratchgpt.plumbing.wikidump import WikiDumpError, clean, extract, read_shard, stream_offsets
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


def make_dump(folder: Path, pages: list[str] = PAGES, per_stream: int = 3) -> tuple[Path, Path]:
    """A multistream dump of ``pages`` and its index, in Wikimedia's layout."""
    names = wikidump.dump_names("testwiki", "20260101")
    dump, index = folder / names["dump"], folder / names["index"]
    streams = [bz2.compress(HEADER.encode())]
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
