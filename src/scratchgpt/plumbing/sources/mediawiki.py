"""Scrape plain-text articles from a MediaWiki site (e.g. Wikipedia) through its Action API.

The articles to fetch are the ``titles`` listed in params, then the namespace-0 members of the
listed ``categories`` (``list=categorymembers``, following ``continue``), deduplicated by page id
and cut off at ``max_articles`` written. Each one is fetched on its own with TextExtracts
(``prop=extracts&explaintext=1``): the API returns a full plain-text extract for only one page per
request. Redirects and title normalisation are followed; missing and invalid pages, empty texts
and texts shorter than ``min_chars`` after cleaning are skipped with a warning.

Requests go through :class:`~scratchgpt.plumbing.http.HttpClient` (timeouts, retries of 429 and 5xx
honouring Retry-After), start at least ``min_interval`` seconds apart, and carry ``maxlag=5`` as
the API etiquette asks; a ``maxlag`` error is waited out and retried a bounded number of times,
and any other API error raises :class:`~scratchgpt.plumbing.http.SourceFailed`.

:func:`clean_extract` turns an extract into training text: headings and unwanted sections
(references, external links, ...) go, and so do LaTeX math and the empty parentheses it leaves.

The output is JSON Lines, one ``{"title", "pageid", "url", "text"}`` object per article, written
atomically: on any failure no file is left behind. :func:`build_dataset` is the ``mediawiki``
source of the download stage.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from scratchgpt.files import atomic_dir, atomic_write
from scratchgpt.plumbing.http import HttpClient, SourceFailed, retry_after_seconds
from scratchgpt.plumbing.sections.download import DatasetParams, MediaWikiParams

log = logging.getLogger(__name__)

MAXLAG = 5  # seconds of replication lag we accept, as recommended for bots
BASE_PARAMS: dict[str, Any] = {"format": "json", "formatversion": 2, "maxlag": MAXLAG}
CATEGORY_PREFIX = "Category:"


@dataclass(frozen=True)
class Article:
    title: str
    pageid: int
    url: str
    text: str

    def to_json_line(self) -> bytes:
        return (json.dumps(asdict(self), ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Talking to the API


class RateLimiter:
    """Makes consecutive calls to :meth:`wait` return at least ``interval`` seconds apart."""

    def __init__(self, interval: float, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self.last: float | None = None

    def wait(self) -> None:
        if self.last is not None:
            remaining = self.last + self.interval - self.clock()
            if remaining > 0:
                self.sleep(remaining)
        self.last = self.clock()


class MediaWikiApi:
    """GET requests to one ``api.php``: rate limited, JSON decoded, API errors turned into exceptions."""

    def __init__(self, client: HttpClient, api_url: str, min_interval: float, clock: Callable[[], float]):
        self.client = client
        self.api_url = api_url
        self.limiter = RateLimiter(min_interval, clock, client.sleep)
        self.requests = 0

    def query(self, params: dict[str, Any]) -> dict[str, Any]:
        """``action=query`` with ``params``; waits out ``maxlag`` errors (bounded), raises on others."""
        full = {"action": "query", **params, **BASE_PARAMS}
        tries = self.client.policy.retries + 1
        for n in range(tries):
            self.limiter.wait()
            resp = self.client.get(self.api_url, params=full)
            self.requests += 1
            data = _decode(resp.text, self.api_url)
            error = data.get("error")
            if not error:
                _log_warnings(data)
                return data
            if error.get("code") != "maxlag" or n + 1 == tries:
                raise SourceFailed(_error_message(error, tries if error.get("code") == "maxlag" else None))
            wait = retry_after_seconds(resp.headers.get("Retry-After"))
            wait = min(MAXLAG if wait is None else wait, self.client.policy.max_backoff)
            log.warning("%s; retry %d/%d in %.1fs", _error_message(error), n + 1, tries - 1, wait)
            self.client.sleep(wait)
        raise AssertionError("unreachable")


def _decode(body: str, url: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise SourceFailed(f"{url} did not answer JSON: {body[:80]!r}") from None
    if not isinstance(data, dict):
        raise SourceFailed(f"{url} answered JSON that is not an object")
    return data


def _error_message(error: dict[str, Any], tries: int | None = None) -> str:
    code = error.get("code", "unknown")
    info = error.get("info") or error.get("text") or ""
    msg = f"MediaWiki API error {code}: {info}".rstrip(": ")
    return f"{msg}; gave up after {tries} tries" if tries else msg


def _log_warnings(data: dict[str, Any]) -> None:
    for module, warning in (data.get("warnings") or {}).items():
        text = (warning.get("warnings") or warning.get("*")) if isinstance(warning, dict) else warning
        log.warning("MediaWiki API warning (%s): %s", module, text)


# ---------------------------------------------------------------------------------------------
# What to fetch


def category_title(name: str) -> str:
    """``"Machine learning"`` or ``"Category:Machine learning"`` → ``"Category:Machine learning"``."""
    name = name.strip()
    if name[: len(CATEGORY_PREFIX)].lower() == CATEGORY_PREFIX.lower():
        name = name[len(CATEGORY_PREFIX) :].strip()
    return CATEGORY_PREFIX + name


def category_members(api: MediaWikiApi, category: str) -> Iterator[tuple[str, int]]:
    """(title, pageid) of the articles in ``category``, fetched page by page only as needed."""
    params: dict[str, Any] = {
        "list": "categorymembers",
        "cmtitle": category_title(category),
        "cmtype": "page",
        "cmnamespace": 0,
        "cmlimit": "max",
    }
    count = 0
    cont: dict[str, Any] = {}
    while True:
        data = api.query({**params, **cont})
        for member in (data.get("query") or {}).get("categorymembers", []):
            if member.get("ns", 0) == 0:
                count += 1
                yield member["title"], member["pageid"]
        cont = data.get("continue") or {}
        if not cont:
            break
    if count == 0:
        log.warning("%s has no articles (or does not exist)", category_title(category))


def candidates(api: MediaWikiApi, params: MediaWikiParams) -> Iterator[tuple[str, int | None]]:
    """The titles from params (page id not known yet), then the members of each category."""
    for title in params.titles:
        yield title, None
    for category in params.categories:
        yield from category_members(api, category)


# ---------------------------------------------------------------------------------------------
# Fetching one article


def fetch_page(api: MediaWikiApi, title: str) -> dict[str, Any] | None:
    """The page object for ``title`` (after redirects), or None when missing or invalid."""
    if "|" in title:
        log.warning("skipping invalid title %r: '|' is not allowed in titles", title)
        return None
    data = api.query({"prop": "extracts", "explaintext": 1, "exsectionformat": "wiki", "redirects": 1, "titles": title})
    query = data.get("query") or {}
    for step in (*query.get("normalized", []), *query.get("redirects", [])):
        log.debug("%r → %r", step.get("from"), step.get("to"))
    pages = query.get("pages") or []
    if not pages:
        log.warning("skipping %r: the API returned no page", title)
        return None
    page = pages[0]
    if page.get("invalid"):
        log.warning("skipping invalid title %r: %s", title, page.get("invalidreason", "invalid"))
        return None
    if page.get("missing") or "pageid" not in page:
        log.warning("skipping %r: no such page", title)
        return None
    return page


def article_url(api_url: str, title: str) -> str:
    """``https://host/wiki/Title_with_underscores``, percent-encoded like MediaWiki does."""
    parts = urllib.parse.urlsplit(api_url)
    path = urllib.parse.quote(title.replace(" ", "_"), safe=";@$!*(),/~:")
    return f"{parts.scheme}://{parts.netloc}/wiki/{path}"


# ---------------------------------------------------------------------------------------------
# Text cleaning

_HEADING = re.compile(r"^[ \t]*(={1,6})[ \t]*(.*?)[ \t]*\1[ \t]*$")
_MATH_START = re.compile(r"\{\\(?:display|text|script|scriptscript)style\b")
_CLOSING_PUNCT = frozenset(".,;:!?)")
_PAREN_LEADING_PUNCT = re.compile(r"\((?:[ \t]*[;,])+[ \t]*")
_EMPTY_PARENS = re.compile(r"[ \t]*\([ \t]*\)")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}(?=\S)")
_BLANK_RUNS = re.compile(r"\n{3,}")


def _section_key(title: str) -> str:
    return " ".join(title.split()).casefold()


def remove_math(text: str) -> str:
    """Remove ``{\\displaystyle ...}`` blocks (and the other ``*style`` ones), nested braces included."""
    out: list[str] = []
    pos = 0
    while (m := _MATH_START.search(text, pos)) is not None:
        end = _closing_brace(text, m.start())
        if end is None:  # unbalanced: leave the rest alone rather than eat the article
            break
        before = text[pos : m.start()]
        if text[end + 1 : end + 2] in _CLOSING_PUNCT:  # "is {\displaystyle x}." -> "is."
            before = before.rstrip(" \t")
        out.append(before)
        pos = end + 1
    out.append(text[pos:])
    return "".join(out)


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` matching the ``{`` at ``start``; backslash-escaped braces don't count."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def drop_headings_and_sections(lines: Iterable[str], drop_sections: Iterable[str]) -> list[str]:
    """Remove heading lines, and whole sections (with subsections) whose title is in ``drop_sections``."""
    drop = {_section_key(s) for s in drop_sections}
    out: list[str] = []
    dropping: int | None = None  # level of the section being dropped
    for line in lines:
        m = _HEADING.match(line)
        if m and m[2]:
            level = len(m[1])
            if dropping is not None and level > dropping:
                continue
            dropping = level if _section_key(m[2]) in drop else None
        elif dropping is None:
            out.append(line)
    return out


def _tidy_line(line: str) -> str:
    line = _PAREN_LEADING_PUNCT.sub("(", line)
    line = _EMPTY_PARENS.sub("", line)
    line = _INNER_SPACES.sub(" ", line)
    return line.rstrip()


def clean_extract(text: str, drop_sections: Iterable[str]) -> str:
    """Plain training text from a TextExtracts extract made with ``exsectionformat=wiki``.

    Heading lines (``== History ==``) go; sections named in ``drop_sections`` (case-insensitive)
    go with their body and subsections; LaTeX math and the empty "( )" or "(; )" it leaves go;
    trailing spaces are stripped and runs of blank lines become one blank line.
    """
    text = remove_math(text.replace("\r\n", "\n"))
    lines = drop_headings_and_sections(text.split("\n"), drop_sections)
    text = "\n".join(_tidy_line(line) for line in lines)
    return _BLANK_RUNS.sub("\n\n", text).strip()


# ---------------------------------------------------------------------------------------------
# The whole scrape


@dataclass
class _Tally:
    written: int = 0
    duplicate: int = 0
    unavailable: int = 0
    empty: int = 0
    short: int = 0

    def skipped(self) -> str:
        return (
            f"{self.duplicate} duplicate, {self.unavailable} missing/invalid, "
            f"{self.empty} empty, {self.short} too short"
        )


def _article(api: MediaWikiApi, params: MediaWikiParams, title: str, seen: set[int], tally: _Tally) -> Article | None:
    """Fetch and clean one article; None (counted in ``tally``) when it is to be skipped."""
    page = fetch_page(api, title)
    if page is None:
        tally.unavailable += 1
        return None
    pageid = int(page["pageid"])
    if pageid in seen:
        log.info("skipping %r: same page as one already written (%s)", title, page["title"])
        tally.duplicate += 1
        return None
    seen.add(pageid)
    raw = page.get("extract") or ""
    if not raw.strip():
        log.warning("skipping %r: the page has no text", page["title"])
        tally.empty += 1
        return None
    text = clean_extract(raw, params.drop_sections)
    if len(text) < params.min_chars:
        log.warning(
            "skipping %r: %d characters after cleaning (min_chars %d)",
            page["title"],
            len(text),
            params.min_chars,
        )
        tally.short += 1
        return None
    return Article(page["title"], pageid, article_url(params.api_url, page["title"]), text)


def scrape(
    params: MediaWikiParams,
    client: HttpClient,
    out_file: Path,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Fetch plain-text articles and write them as JSON Lines to out_file (atomically); return the count."""
    api = MediaWikiApi(client, params.api_url, params.min_interval, clock)
    seen: set[int] = set()
    requested: set[str] = set()
    tally = _Tally()
    log.info("scraping up to %d articles from %s", params.max_articles, params.api_url)
    with (
        atomic_write(out_file) as f,
        tqdm(total=params.max_articles, desc="articles", unit="article", leave=False, disable=None) as bar,
    ):
        for title, pageid in candidates(api, params):
            if (pageid is not None and pageid in seen) or title in requested:
                tally.duplicate += 1
                continue
            requested.add(title)
            article = _article(api, params, title, seen, tally)
            if article is not None:
                f.write(article.to_json_line())
                tally.written += 1
                bar.update(1)
                log.debug("%s: %d characters", article.title, len(article.text))
            if tally.written >= params.max_articles:
                break
        if tally.written == 0:
            raise SourceFailed(f"no articles written from {params.api_url} (skipped: {tally.skipped()})")
    log.info(
        "wrote %d articles to %s in %d requests (skipped: %s)",
        tally.written,
        out_file,
        api.requests,
        tally.skipped(),
    )
    return tally.written


def build_dataset(params: MediaWikiParams, out_dir: str | os.PathLike[str], client: HttpClient) -> dict[str, str]:
    """data/raw/<dataset>/ from a MediaWiki site: its articles.jsonl, the folder appearing whole or
    not at all. Returns {file: what it is}."""
    with atomic_dir(Path(out_dir)) as staging:
        count = scrape(params, client, staging / "articles.jsonl")
    return {"articles.jsonl": f"{count} articles from {params.api_url}"}


def fetch(
    name: str, dataset: DatasetParams, out: Path, client: HttpClient, mirror: str | None, reuse: Path
) -> dict[str, str]:
    """The ``mediawiki`` source: articles from the site's API (no mirror: they are live pages)."""
    assert dataset.mediawiki is not None  # params: required with this source
    return build_dataset(dataset.mediawiki, out, client)
