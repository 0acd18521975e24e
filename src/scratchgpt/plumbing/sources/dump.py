"""Wikipedia articles from Wikimedia's multistream dumps, extracted in parallel into JSONL shards.

A dump ``<wiki>-<date>-pages-articles-multistream.xml.bz2`` is a series of independent bz2
streams: the first holds the XML header (``<mediawiki>`` and ``<siteinfo>``), each of the next
holds up to 100 ``<page>`` elements, the last closes ``</mediawiki>``. Its index
``...-multistream-index.txt.bz2`` lists ``offset:pageid:title`` per page, the offset being that
of the page's stream; so any stream can be read on its own (seek, read up to the next offset,
decompress), and the work splits across processes by stream, with memory bounded by one shard
whatever the dump's size.

- **Reading**: mwxml (mediawiki-utilities' streaming dump reader, maintained, typed pages and
  revisions, namespaces from siteinfo) parses each stream behind the dump's own header.
- **Cleaning**: mwparserfromhell (the wikitext parser pywikibot and most bots use: a real parse
  tree, not regular expressions) drops templates, tables, references, galleries, comments, files
  and categories, keeps a link's text and each heading as a line of its own.
- **Which pages**: namespace 0, no redirects, no disambiguation pages, at least ``min_chars``
  characters of text after cleaning.
- **Output**: shards ``articles-NNNNN.jsonl.gz`` (``title``, ``pageid``, ``revid``, ``url``,
  ``text``; gzip without a timestamp, so the bytes depend on the dump alone), each written
  atomically once all its streams decoded: a rerun keeps the complete shards (while
  ``extracted-from.json`` names the same dump and settings) and extracts the rest.
  ``manifest.json`` last: counts, each shard's sha256, the dump's checksum, the pages skipped.
- **Bounds**: a stream decompresses to at most ``max_stream_bytes`` (a bz2 bomb stops there), must
  end where the index's next offset begins and hold the pages the index lists for it; a page of
  more than ``max_page_bytes`` is cut out before any parse and listed; a DOCTYPE or entity
  declaration is refused. These, broken XML and bad index lines are each one WikiDumpError line
  naming the file and the byte offset (or index line).
- **A sample**: ``max_articles`` / ``max_bytes`` keep the first articles in dump order, the same
  ones every time and for any number of workers.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import html
import io
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.etree.ElementTree import ParseError

import mwparserfromhell
import mwxml
from mwxml.errors import MalformedXML

from scratchgpt.errors import PipelineError
from scratchgpt.files import atomic_dir, atomic_path, json_digest, sha256_file, write_json
from scratchgpt.plumbing import paths
from scratchgpt.plumbing.download import fetch_file
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import DatasetParams, DumpParams, FileParams

log = logging.getLogger(__name__)

SHARD = "articles-{:05d}.jsonl.gz"
SAMPLE = ".sample.jsonl.gz"  # the shard a sample ends in, cut (its full version is not kept)
MANIFEST = "manifest.json"
SOURCE = "extracted-from.json"  # the dump and settings the shards beside it come from
FORMAT = 1
# Tags whose whole content goes: references, tables, galleries, math and code blocks.
DROPPED_TAGS = {"ref", "references", "table", "gallery", "math", "chem", "score", "timeline", "syntaxhighlight"}
# Link namespaces whose links go whole (canonical names; the dump's local names are added).
DROPPED_LINKS = {"file", "image", "media", "category"}
DISAMBIGUATION = re.compile(r"^(disambiguation|disambig|dab|disamb|hndis|geodis|surname|given name)\b", re.I)
# Bounds (as DumpParams): a stream's decompressed bytes (real ones: a few MB), a page's XML (real: up to 1-2 MB).
MAX_STREAM_BYTES = 128 << 20
MAX_PAGE_BYTES = 8 << 20
CHUNK = 1 << 20  # read and decompressed at a time
INDEX_LINE = re.compile(r"([0-9]{1,20}):([0-9]{1,20}):")
MAX_INDEX_LINE = 4096  # characters (a title has at most 255 bytes)
ENTITIES = re.compile(rb"<!(?:DOCTYPE|ENTITY)")  # never expanded: a dump that declares any is refused
PAGE_ID = re.compile(rb"<id>\s*([0-9]{1,20})\s*</id>")
PAGE_TITLE = re.compile(rb"<title>([^<]{0,1000})</title>")
# What mwxml (and ElementTree under it) raise on XML that is not a dump's.
XML_ERRORS = (ParseError, MalformedXML, ValueError, TypeError, AttributeError, KeyError)


class WikiDumpError(PipelineError, ValueError):
    """A dump, index or stream that cannot be read; the message names the file and the offset."""


def dump_names(wiki: str, date: str) -> dict[str, str]:
    """The file names Wikimedia publishes for one dump."""
    stem = f"{wiki}-{date}-pages-articles-multistream"
    return {"dump": f"{stem}.xml.bz2", "index": f"{stem}-index.txt.bz2", "sha1sums": f"{wiki}-{date}-sha1sums.txt"}


# ---------------------------------------------------------------------------------------------
# Streams


def _ids_key(ids: Iterable[int]) -> tuple[int, int]:
    """A set of page ids in brief (their count and a hash), to compare a stream's pages with its index entry."""
    ordered = tuple(sorted(ids))
    return len(ordered), hash(ordered)  # ints hash alike in every process


def read_index(index: str | os.PathLike[str]) -> dict[int, tuple[int, int]]:
    """{stream offset: its page ids in brief} of a multistream index, in order; the offsets must increase."""
    listed: dict[int, tuple[int, int]] = {}
    offset, ids = -1, []
    try:
        with bz2.open(index, "rt", encoding="utf-8") as f:
            for n, line in enumerate(iter(lambda: f.readline(MAX_INDEX_LINE), ""), start=1):
                match = INDEX_LINE.match(line)
                if not match or (len(line) == MAX_INDEX_LINE and not line.endswith("\n")):
                    raise WikiDumpError(f"{index}: line {n}: expected offset:pageid:title, got {line[:80]!r}")
                start = int(match[1])
                if start < offset:
                    raise WikiDumpError(
                        f"{index}: line {n}: stream offset {start:,} after {offset:,}; offsets must increase"
                    )
                if start != offset and ids:
                    listed[offset], ids = _ids_key(ids), []
                offset = start
                ids.append(int(match[2]))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise WikiDumpError(f"{index}: not a readable bz2 index ({_one_line(e)})") from None
    if not ids:
        raise WikiDumpError(f"{index}: no page in the index")
    listed[offset] = _ids_key(ids)
    return listed


def stream_offsets(index: str | os.PathLike[str]) -> list[int]:
    """The increasing stream offsets of a multistream index."""
    return list(read_index(index))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def read_stream(
    dump: str | os.PathLike[str], start: int, end: int, max_bytes: int = MAX_STREAM_BYTES, closing: bool = False
) -> bytearray:
    """The decompressed bytes (at most ``max_bytes``) of the bz2 stream at ``start``, which must fill the span up
    to ``end``: bytes left after it mean that the index skipped a stream, except, with ``closing`` (the dump's
    last span), the small stream of ``</mediawiki>`` that ends a dump."""
    where = f"{dump}: the bz2 stream at byte {start:,}"
    decompressor, out, pos = bz2.BZ2Decompressor(), bytearray(), start
    with open(dump, "rb") as f:
        f.seek(start)
        while not decompressor.eof:
            data = b""
            if decompressor.needs_input:
                data = f.read(max(0, min(CHUNK, end - pos)))
                if not data:
                    raise WikiDumpError(f"{where} is truncated: it does not end by byte {end:,}")
                pos += len(data)
            try:
                out += decompressor.decompress(data, max_length=min(CHUNK, max_bytes + 1 - len(out)))
            except (OSError, EOFError, ValueError) as e:
                raise WikiDumpError(f"{where} is corrupt ({_one_line(e)})") from None
            if len(out) > max_bytes:
                raise WikiDumpError(f"{where} decompresses to more than max_stream_bytes ({max_bytes:,} bytes)")
        rest = len(decompressor.unused_data) + end - pos
        if rest and not closing:
            raise WikiDumpError(
                f"{where} ends at byte {end - rest:,}, before the next stream in the index (byte {end:,}):"
                " the index skips a stream"
            )
        if rest and not (rest <= 4096 and _closing(decompressor.unused_data + f.read(end - pos))):
            raise WikiDumpError(f"{where} ends at byte {end - rest:,}; what follows is not the closing </mediawiki>")
    return out


def _closing(raw: bytes) -> bool:
    """Whether ``raw`` is one bz2 stream of ``</mediawiki>``."""
    decompressor = bz2.BZ2Decompressor()
    try:
        text = decompressor.decompress(raw, max_length=64)
    except (OSError, EOFError, ValueError):
        return False
    return decompressor.eof and not decompressor.unused_data and text.strip() == b"</mediawiki>"


def _refuse_entities(data: bytes | bytearray, where: str) -> None:
    if match := ENTITIES.search(data):
        raise WikiDumpError(f"{where} declares a DOCTYPE or entity (at its byte {match.start():,}); refused")


def xml_header(dump: str | os.PathLike[str], first_page_stream: int, max_bytes: int = MAX_STREAM_BYTES) -> bytes:
    """The dump's header: the ``<mediawiki>`` element's start and its ``<siteinfo>``."""
    head = read_stream(dump, 0, first_page_stream, max_bytes)
    _refuse_entities(head, f"{dump}: the header stream at byte 0")
    if b"</siteinfo>" not in head:
        raise WikiDumpError(f"{dump}: its first stream holds no <siteinfo>; not a multistream dump")
    return bytes(head[: head.index(b"</siteinfo>") + len(b"</siteinfo>")]) + b"\n"


# ---------------------------------------------------------------------------------------------
# Pages and their text


@dataclass(frozen=True)
class Article:
    title: str
    pageid: int
    revid: int
    url: str
    text: str


def _dropped_link_prefixes(namespaces: Sequence[Any]) -> set[str]:
    names = set(DROPPED_LINKS)
    for ns in namespaces:
        if ns.id in (6, 14) and ns.name:
            names.add(ns.name.lower())
    return names


def clean(wikitext: str | Any, dropped_links: set[str] = DROPPED_LINKS) -> str:
    """Plain text of an article's wikitext (or its parse tree): templates, tables, references,
    comments, files and categories removed, a link's text kept, each heading on a line of its
    own, whitespace collapsed within lines. One walk of the tree, which is left as it is."""
    code = mwparserfromhell.parse(wikitext) if isinstance(wikitext, str) else wikitext
    lines = []
    for line in "".join(_text(code, dropped_links)).splitlines():
        line = " ".join(line.split())
        if line:
            lines.append(line)
    return "\n".join(lines)


def _text(code: Any, dropped_links: set[str]) -> Iterator[str]:
    """The prose of a wikicode tree, piece by piece."""
    for node in code.nodes:
        kind = type(node).__name__
        if kind == "Text":
            yield str(node.value)
        elif kind == "Wikilink":
            # only a namespace prefix drops a link ([[File:x.jpg]], not [[media]]); [[:Category:X]] is a visible link
            namespace, colon, _ = str(node.title).strip().partition(":")
            if not colon or " ".join(namespace.replace("_", " ").split()).lower() not in dropped_links:
                if node.text is not None:
                    yield from _text(node.text, dropped_links)
                else:
                    yield "".join(_text(node.title, dropped_links)).strip().removeprefix(":")
        elif kind == "Heading":
            yield "\n"
            yield from _text(node.title, dropped_links)
            yield "\n"
        elif kind == "Tag":
            if str(node.tag).lower() not in DROPPED_TAGS and node.contents is not None:
                yield from _text(node.contents, dropped_links)
        elif kind == "ExternalLink":
            if node.title is not None:
                yield from _text(node.title, dropped_links)
        elif kind == "HTMLEntity":
            yield node.normalize()
        # Template, Argument, Comment: nothing


def is_disambiguation(title: str, code: Any) -> bool:
    """A disambiguation page, by its title or its templates (``code``: wikitext or its tree)."""
    if title.endswith("(disambiguation)"):
        return True
    code = mwparserfromhell.parse(code) if isinstance(code, str) else code
    return any(DISAMBIGUATION.match(str(t.name).strip()) for t in code.filter_templates(recursive=False))


def articles(
    header: bytes,
    stream: bytes | bytearray,
    base_url: str,
    min_chars: int = 0,
    seen: list[int] | None = None,
    where: str = "the stream",
) -> Iterator[Article]:
    """The articles of one stream of pages, in order: namespace 0, no redirects, no
    disambiguation pages, at least ``min_chars`` characters after cleaning. ``seen`` gets the id
    of every page read, whatever its namespace; XML that is not a dump's is a WikiDumpError."""
    closing = b"" if stream[-64:].strip().endswith(b"</mediawiki>") else b"</mediawiki>"
    try:
        dump = mwxml.Dump.from_file(io.BytesIO(header + stream + closing))
    except XML_ERRORS as e:
        raise WikiDumpError(f"{where} is not XML of pages ({type(e).__name__}: {_one_line(e)})") from None
    dropped = _dropped_link_prefixes(dump.site_info.namespaces or [])
    for page, revisions in _pages(dump, where):
        if seen is not None:
            seen.append(page.id)
        if page.namespace != 0 or page.redirect or not revisions:
            continue
        revision = revisions[-1]
        wikitext = revision.text or ""
        if wikitext.lstrip().lower().startswith("#redirect"):
            continue
        code = mwparserfromhell.parse(wikitext)  # once, for both
        if is_disambiguation(page.title, code):
            continue
        text = clean(code, dropped)
        if len(text) < min_chars:
            continue
        url = f"{base_url}/wiki/{quote(page.title.replace(' ', '_'), safe='/:()_,')}"
        yield Article(page.title, page.id, revision.id, url, text)


def _pages(dump: Any, where: str) -> Iterator[tuple[Any, list[Any]]]:
    """mwxml's pages of a dump, each with its revisions."""
    try:
        for page in dump:
            revisions = list(page)
            if not isinstance(page.id, int) or page.title is None:
                raise MalformedXML("a <page> without its <id> or <title>")
            yield page, revisions
    except XML_ERRORS as e:
        raise WikiDumpError(f"{where} is not XML of pages ({type(e).__name__}: {_one_line(e)})") from None


def cut_large_pages(
    stream: bytearray, max_bytes: int, where: str = "the stream"
) -> tuple[bytes | bytearray, list[dict[str, Any]]]:
    """The stream without its pages of more than ``max_bytes`` of XML, cut out before any parse
    (mwparserfromhell takes minutes and gigabytes on a 64 MiB page), and their id, title and size."""
    kept, large, pos = [], [], 0
    i = stream.find(b"<page>")
    while i >= 0:
        j = stream.find(b"</page>", i)
        if j < 0:
            raise WikiDumpError(f"{where}: the <page> at its byte {i:,} has no </page>")
        j += len(b"</page>")
        if j - i > max_bytes:
            head = bytes(stream[i : i + 4096])
            pageid, title = PAGE_ID.search(head), PAGE_TITLE.search(head)
            if not pageid:
                raise WikiDumpError(f"{where}: the <page> at its byte {i:,} has no <id>")
            name = html.unescape(title[1].decode("utf-8", "replace")) if title else ""
            large.append({"pageid": int(pageid[1]), "title": name, "bytes": j - i})
            kept.append(stream[pos:i])
            pos = j
        i = stream.find(b"<page>", j)
    if not large:
        return stream, []
    kept.append(stream[pos:])
    return b"".join(kept), large


# ---------------------------------------------------------------------------------------------
# Shards, in parallel


@dataclass(frozen=True)
class Job:
    dump: str
    size: int  # the dump's, where its last span ends
    header: bytes
    spans: tuple[tuple[int, int, tuple[int, int]], ...]  # (start, end, the index's page ids) of each stream
    path: str
    base_url: str
    min_chars: int
    max_stream_bytes: int = MAX_STREAM_BYTES
    max_page_bytes: int = MAX_PAGE_BYTES


def write_shard(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``records`` (article dicts) as a shard at ``path``, atomically, gzip without a timestamp;
    their count and text bytes."""
    count = size = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
            for record in records:
                out.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                count, size = count + 1, size + len(record["text"].encode("utf-8"))
    return {"articles": count, "text_bytes": size}


def _span(job: Job, start: int, end: int, listed: tuple[int, int], skipped: list[dict[str, Any]]) -> Iterator[Article]:
    """The articles of one stream, whose pages must be those its index entry lists."""
    where = f"{job.dump}: the stream at byte {start:,}"
    stream = read_stream(job.dump, start, end, job.max_stream_bytes, closing=end == job.size)
    _refuse_entities(stream, where)
    stream, large = cut_large_pages(stream, job.max_page_bytes, where)
    seen = [page["pageid"] for page in large]
    yield from articles(job.header, stream, job.base_url, job.min_chars, seen, where)
    if _ids_key(seen) != listed:
        ids = f" (ids {min(seen)} to {max(seen)})" if seen else ""
        raise WikiDumpError(f"{where} holds {len(seen)} page(s){ids}, not the {listed[0]} its index entry lists")
    skipped.extend(large)


def _skipped_file(shard: str | os.PathLike[str]) -> Path:
    """Where the pages a shard's streams held over max_page_bytes are listed (written before the shard)."""
    return Path(shard).with_name(Path(shard).name.removesuffix(".jsonl.gz") + ".skipped.json")


def _write_shard(job: Job) -> dict[str, Any]:
    """Extract one shard's streams into its file; a stream that fails leaves no shard."""
    listing = _skipped_file(job.path)
    listing.unlink(missing_ok=True)
    skipped: list[dict[str, Any]] = []

    def found() -> Iterator[dict[str, Any]]:
        for start, end, listed in job.spans:
            yield from (asdict(article) for article in _span(job, start, end, listed, skipped))
        if skipped:  # before the shard is renamed into place
            write_json(listing, skipped)

    return write_shard(job.path, found())


def _remove_temporaries(out_dir: Path) -> None:
    """Temporary files of shards whose writers were killed (atomic_path names them ``.<name>.*.tmp``)."""
    for tmp in out_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _keep_only(out_dir: Path, key: dict[str, Any]) -> None:
    """Keep the shards in ``out_dir`` only if they come from the dump and settings of ``key``."""
    path = out_dir / SOURCE
    try:
        same = json.loads(path.read_text(encoding="utf-8")) == key
    except (OSError, ValueError):
        same = False
    if not same:
        for old in [*out_dir.glob("articles-*"), out_dir / MANIFEST]:
            old.unlink(missing_ok=True)
        write_json(path, key)


def _full(articles_: int, text_bytes: int, max_articles: int | None, max_bytes: int | None) -> bool:
    """Whether a sample of this many articles and text bytes has reached its bound."""
    return (max_articles is not None and articles_ >= max_articles) or (
        max_bytes is not None and text_bytes >= max_bytes
    )


def read_shard(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The articles of a shard, in order."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def _count(path: Path) -> dict[str, Any]:
    n = size = 0
    for a in read_shard(path):
        n, size = n + 1, size + len(a["text"].encode("utf-8"))
    return {"articles": n, "text_bytes": size}


def extract(
    dump: str | os.PathLike[str],
    index: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    base_url: str | None = None,
    *,
    workers: int | None = None,
    streams_per_shard: int = 20,
    min_chars: int = 0,
    max_articles: int | None = None,
    max_bytes: int | None = None,
    checksum: str | None = None,
    max_stream_bytes: int = MAX_STREAM_BYTES,
    max_page_bytes: int = MAX_PAGE_BYTES,
) -> dict[str, Any]:
    """Extract the dump's articles into ``out_dir``; returns (and writes) the manifest.

    Shards already in ``out_dir`` are complete (each is written atomically, once all its streams
    decoded) and are kept while the dump (its ``checksum``, else its size and time) and the
    settings stay the same: an interrupted run continues with the rest. ``max_articles`` /
    ``max_bytes`` (text bytes) keep the first articles in dump order, the last shard cut where
    the sample ends. Pages over ``max_page_bytes`` are skipped, listed in the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(out_dir)
    for stale in out_dir.glob(f"*{SAMPLE}"):  # an earlier sample's cut shard
        stale.unlink()
    listed = read_index(index)
    offsets, size = list(listed), os.path.getsize(dump)
    if offsets[-1] >= size:
        raise WikiDumpError(f"{index}: stream offset {offsets[-1]:,} is past the end of {dump} ({size:,} bytes)")
    header = xml_header(dump, offsets[0], max_stream_bytes)
    base_url = base_url or site_base(header)
    settings = {"min_chars": min_chars, "streams_per_shard": streams_per_shard}
    settings |= {"max_stream_bytes": max_stream_bytes, "max_page_bytes": max_page_bytes}
    stamps = [[os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in (dump, index)]
    _keep_only(out_dir, {"format": FORMAT, "dump": checksum or [Path(dump).name, stamps], **settings})
    spans = [(s, e, listed[s]) for s, e in zip(offsets, [*offsets[1:], size])]
    groups = [tuple(spans[i : i + streams_per_shard]) for i in range(0, len(spans), streams_per_shard)]
    job = Job(str(dump), size, header, (), "", base_url, min_chars, max_stream_bytes, max_page_bytes)
    jobs = [replace(job, spans=g, path=str(out_dir / SHARD.format(i))) for i, g in enumerate(groups)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    counts: list[dict[str, Any]] = []
    total_articles = total_bytes = 0

    def enough() -> bool:
        return _full(total_articles, total_bytes, max_articles, max_bytes)

    # In rounds of `workers` shards, in order, so that a sample stops at the same article whatever
    # the number of workers; finished shards are read back instead of extracted again.
    context = multiprocessing.get_context("spawn") if workers > 1 else None
    pool = context.Pool(workers) if context else None
    finished = False
    try:
        for first in range(0, len(jobs), workers):
            batch = jobs[first : first + workers]
            todo = [j for j in batch if not Path(j.path).is_file()]
            done = dict(zip((j.path for j in todo), pool.map(_write_shard, todo) if pool else map(_write_shard, todo)))
            for job in batch:
                counts.append(done.get(job.path) or _count(Path(job.path)))
                total_articles += counts[-1]["articles"]
                total_bytes += counts[-1]["text_bytes"]
                if enough():
                    break
            if enough():
                break
        finished = True
    finally:
        if pool and finished:
            pool.close()
            pool.join()
        elif pool:  # an error or Ctrl-C: stop the workers now (complete shards stay for the next run)
            pool.terminate()
            pool.join()
            _remove_temporaries(out_dir)  # of the shards the workers were writing
    kept = len(counts)
    files = [Path(j.path) for j in jobs[:kept]]
    if enough():
        files[-1], counts[-1] = _cut(files[-1], counts, max_articles, max_bytes)
    for job in jobs[kept:]:  # a sample: shards past it (from an earlier, larger run) go
        Path(job.path).unlink(missing_ok=True)
        _skipped_file(job.path).unlink(missing_ok=True)
    shards = [{"file": f.name, **c, "sha256": sha256_file(f)} for f, c in zip(files, counts)]
    listings = [_skipped_file(j.path) for j in jobs[:kept]]
    skipped = [page for f in listings if f.is_file() for page in json.loads(f.read_text(encoding="utf-8"))]
    if skipped:
        log.warning(
            "%d page(s) of more than max_page_bytes (%s bytes) skipped unparsed: %s",
            len(skipped),
            f"{max_page_bytes:,}",
            ", ".join(f"{p['title']!r} ({p['bytes']:,} bytes)" for p in skipped[:5]) + (" ..." * (len(skipped) > 5)),
        )
    manifest = {
        "format": FORMAT,
        "dump": Path(dump).name,
        "dump_checksum": checksum,
        "streams": len(spans),
        "articles": sum(s["articles"] for s in shards),
        "text_bytes": sum(s["text_bytes"] for s in shards),
        "min_chars": min_chars,
        "max_articles": max_articles,
        "max_bytes": max_bytes,
        "max_page_bytes": max_page_bytes,
        "skipped_large_pages": skipped,
        "shards": shards,
    }
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def _cut(
    path: Path, counts: list[dict[str, Any]], max_articles: int | None, max_bytes: int | None
) -> tuple[Path, dict[str, Any]]:
    """The shard that ends the sample, cut after the sample's last article into its own file
    (``...sample.jsonl.gz``); the full shard goes, so no later run takes the cut one as complete."""
    n = sum(c["articles"] for c in counts[:-1])
    size = sum(c["text_bytes"] for c in counts[:-1])

    def within() -> Iterator[dict[str, Any]]:
        nonlocal n, size
        for article in read_shard(path):
            if _full(n, size, max_articles, max_bytes):
                return
            n, size = n + 1, size + len(article["text"].encode("utf-8"))
            yield article

    cut = path.with_name(path.name.removesuffix(".jsonl.gz") + SAMPLE)
    written = write_shard(cut, within())
    path.unlink()
    return cut, written


# ---------------------------------------------------------------------------------------------
# The dump's files, downloaded and checked


def sha1_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sha1sums(path: str | os.PathLike[str]) -> dict[str, str]:
    """{file name: sha1} of a dump's ``<wiki>-<date>-sha1sums.txt`` (``<sha1>  <name>`` lines)."""
    sums = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.strip().partition(" ")
        if len(digest) != 40 or not all(c in "0123456789abcdef" for c in digest) or not name.strip():
            raise WikiDumpError(f"{path}: line {n}: expected '<sha1>  <file name>', got {line[:80]!r}")
        sums[name.strip().lstrip("*")] = digest
    return sums


def fetch_dump(
    p: DumpParams, folder: str | os.PathLike[str], client: HttpClient, mirror: str | None = None
) -> dict[str, Any]:
    """The dump, its index and its sha1sums file in ``folder`` (and the dump's sha1) (a cache: 20 GB are not copied
    around), each from ``p.base_url``/<wiki>/<date>/ or the mirror, with the guarantees of every
    download (caps, retries, Range resume, atomic rename), the dump and index then checked
    against the sha1sums file. A file that fails its check is deleted."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = dump_names(p.wiki, p.date)
    base = f"{p.base_url.rstrip('/')}/{p.wiki}/{p.date}"
    sums_spec = FileParams(
        name=names["sha1sums"], urls=[f"{base}/{names['sha1sums']}"], sha256=p.sha1sums_sha256, max_bytes=1 << 20
    )
    sums_path = folder / names["sha1sums"]
    log.info("%s: %s", sums_path.name, fetch_file(sums_spec, sums_path, client, mirror))
    sums = read_sha1sums(sums_path)
    found: dict[str, Any] = {"sha1sums": sums_path}
    for key in ("index", "dump"):
        name = names[key]
        if name not in sums:
            raise WikiDumpError(f"{sums_path}: no checksum for {name}; is {p.wiki} {p.date} a multistream dump?")
        dest = folder / name
        if dest.is_file() and sha1_file(dest) == sums[name]:
            log.info("%s: already present", name)
        else:
            dest.unlink(missing_ok=True)
            spec = FileParams(name=name, urls=[f"{base}/{name}"], max_bytes=p.max_bytes)
            source = fetch_file(spec, dest, client, mirror, resume=True)
            digest = sha1_file(dest)
            if digest != sums[name]:
                dest.unlink()
                raise WikiDumpError(
                    f"{name} from {source}: sha1 {digest} does not match {sums[name]} in {sums_path.name}; deleted"
                )
            log.info("%s: %s", name, source)
        found[key] = dest
    found["dump_sha1"] = sums[names["dump"]]
    return found


def settings_digest(p: DumpParams) -> str:
    """What determines the extracted shards (not the number of workers)."""
    keys = "wiki date min_chars max_articles max_text_bytes streams_per_shard max_stream_bytes max_page_bytes"
    return json_digest({k: getattr(p, k) for k in keys.split()})[:16]


def site_base(header: bytes) -> str:
    """The wiki's address (scheme and host) from the dump's ``<base>``, for article URLs."""
    match = re.search(rb"<base>(https?://[^/<]+)", header)
    return match.group(1).decode() if match else "https://en.wikipedia.org"


def build_dataset(
    p: DumpParams, out_dir: str | os.PathLike[str], client: HttpClient, mirror: str | None, cache: Path
) -> dict[str, str]:
    """data/raw/<dataset>/ from a dump: the dump downloaded into ``cache``/wikidumps/, its
    articles extracted there (resumable, keyed by the settings that shape them), then the shards
    and their manifest copied into ``out_dir`` together. Returns {file: what it is}."""
    folder = cache / "wikidumps" / f"{p.wiki}-{p.date}"
    files = fetch_dump(p, folder, client, mirror)
    checksum = "sha1:" + files["dump_sha1"]
    shards_dir = folder / f"shards-{files['dump_sha1'][:12]}-{settings_digest(p)}"  # by content and settings
    manifest = extract(
        files["dump"],
        files["index"],
        shards_dir,
        workers=p.workers or None,
        streams_per_shard=p.streams_per_shard,
        min_chars=p.min_chars,
        max_articles=p.max_articles,
        max_bytes=p.max_text_bytes,
        checksum=checksum,
        max_stream_bytes=p.max_stream_bytes,
        max_page_bytes=p.max_page_bytes,
    )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as staging:
        for shard in manifest["shards"]:
            shutil.copyfile(shards_dir / shard["file"], staging / shard["file"])
        write_json(staging / MANIFEST, manifest)
    return {
        MANIFEST: f"{manifest['articles']:,} articles in {len(manifest['shards'])} shard(s) from {files['dump'].name}"
    }


def fetch(
    name: str, dataset: DatasetParams, out: Path, client: HttpClient, mirror: str | None, reuse: Path
) -> dict[str, str]:
    """The ``dump`` source: the dump and its extraction stay in the cache, the shards come to ``out``."""
    assert dataset.dump is not None  # params: required with this source
    return build_dataset(dataset.dump, out, client, mirror, paths.cache_dir())
