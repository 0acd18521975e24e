"""scratchgpt.plumbing.sources.mediawiki against a fake MediaWiki Action API on 127.0.0.1 (never the network).

The fake speaks ``format=json&formatversion=2`` like the real api.php: ``prop=extracts`` with
title normalisation, redirects, missing and invalid titles; ``list=categorymembers`` split into
pages with ``continue``; injected HTTP errors and API errors. It records every request.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scratchgpt.plumbing.http import HttpClient, SourceFailed
from scratchgpt.plumbing.sections.download import HttpParams, MediaWikiParams
from scratchgpt.plumbing.sources.mediawiki import (
    article_url,
    category_title,
    clean_extract,
    remove_math,
    scrape,
)

USER_AGENT = "scratchgpt-tests/1.0 (https://example.org/scratchgpt; tests@example.org)"

LLM_EXTRACT = (
    "A large language model (LLM) is a language model trained on vast text.  \n"
    "\n\n== History ==\n"
    "Early models counted words.   \n"
    "\n\n\n\n=== Transformers ===\n"
    "The attention score is {\\displaystyle \\mathrm {softmax} \\left({\\frac {QK^{T}}{\\sqrt {d_{k}}}}\\right)}"
    " computed per token.\n"
    "\n\n== See also ==\n"
    "Foundation model\nChatbot\n"
    "\n\n== References ==\n"
    "\n\n=== Citations ===\n"
    "Vaswani et al. 2017.\n"
    "\n\n== External links ==\n"
    "Official site"
)
LLM_TEXT = (
    "A large language model (LLM) is a language model trained on vast text.\n\n"
    "Early models counted words.\n\n"
    "The attention score is computed per token."
)
TOKENIZATION_EXTRACT = (
    "Tokenization ( ) is the process of splitting text into tokens (; see also lexing).\n\n\n== Notes ==\nA note.\n"
)
TOKENIZATION_TEXT = "Tokenization is the process of splitting text into tokens (see also lexing)."

PAGES: dict[str, tuple[int, str]] = {
    "Large language model": (101, LLM_EXTRACT),
    "Tokenization (lexical analysis)": (102, TOKENIZATION_EXTRACT),
    "Attention (machine learning)": (103, "Attention weighs the tokens of a sequence against each other."),
    "Word embedding": (104, "A word embedding maps each word to a vector of real numbers."),
    "Stub": (105, "Tiny."),
    "Empty page": (106, ""),
    "Café": (107, "A café is a place that serves coffee and light meals."),
}
REDIRECTS = {"LLM": "Large language model"}
CATEGORIES: dict[str, list[tuple[str, int, int]]] = {  # name -> [(title, pageid, namespace)]
    "Machine learning": [
        ("Attention (machine learning)", 103, 0),
        ("Large language model", 101, 0),
        ("Template:Machine learning", 900, 10),
        ("Word embedding", 104, 0),
        ("Stub", 105, 0),
    ],
    "Natural language processing": [
        ("Tokenization (lexical analysis)", 102, 0),
        ("Word embedding", 104, 0),
    ],
}
INVALID_CHARS = set("<>[]{}|#")


class FakeClock:
    """Time that moves only when slept on or when the fake server spends time on a request."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Request:
    params: dict[str, str]
    headers: dict[str, str]
    at: float | None  # the fake clock when the request arrived


@dataclass
class FakeWiki:
    """State of the fake api.php: its content, the faults to inject and what it was asked."""

    url: str = ""
    category_page_size: int = 2
    faults: deque[tuple[int, dict[str, str], Any]] = field(default_factory=deque)
    always: tuple[int, dict[str, str], Any] | None = None
    requests: list[Request] = field(default_factory=list)
    clock: FakeClock | None = None
    request_cost: float = 0.0  # fake seconds each request takes

    def fail_next(self, status: int, headers: dict[str, str] | None = None, body: Any = "") -> None:
        self.faults.append((status, headers or {}, body))

    # -- what tests look at

    def extract_titles(self) -> list[str]:
        return [r.params["titles"] for r in self.requests if r.params.get("prop") == "extracts"]

    def category_requests(self) -> list[dict[str, str]]:
        return [r.params for r in self.requests if r.params.get("list") == "categorymembers"]

    # -- the API

    def answer(self, params: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        if self.clock is not None:
            self.clock.now += self.request_cost
        if self.always is not None:
            return self.always
        if self.faults:
            return self.faults.popleft()
        if params.get("format") != "json" or params.get("formatversion") != "2":
            return 200, {}, api_error("badformat", "this fake only speaks format=json&formatversion=2")
        if params.get("action") != "query":
            return 200, {}, api_error("badvalue", f"Unrecognized value for parameter action: {params.get('action')}")
        if params.get("list") == "categorymembers":
            return 200, {}, self.category_members(params)
        if params.get("prop") == "extracts":
            return 200, {}, self.extracts(params)
        return 200, {}, {"batchcomplete": True}

    def extracts(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("explaintext") != "1" or params.get("exsectionformat") != "wiki":
            return api_error("badparams", "expected explaintext=1 and exsectionformat=wiki")
        query: dict[str, Any] = {}
        pages = []
        for i, asked in enumerate(params["titles"].split("|")):
            title = normalise(asked)
            if title is None:
                reason = "The requested page title is invalid."
                pages.append({"title": asked, "invalidreason": reason, "invalid": True})
                continue
            if title != asked:
                query.setdefault("normalized", []).append({"fromencoded": False, "from": asked, "to": title})
            if title in REDIRECTS and params.get("redirects") == "1":
                query.setdefault("redirects", []).append({"from": title, "to": REDIRECTS[title]})
                title = REDIRECTS[title]
            if title not in PAGES:
                pages.append({"ns": 0, "title": title, "missing": True})
                continue
            pageid, extract = PAGES[title]
            page: dict[str, Any] = {"pageid": pageid, "ns": 0, "title": title}
            if i == 0:  # like TextExtracts: a full extract for one page per request only
                page["extract"] = extract
            pages.append(page)
        query["pages"] = pages
        answer: dict[str, Any] = {"batchcomplete": True, "query": query}
        if len(pages) > 1:
            answer["continue"] = {"excontinue": 1, "continue": "||"}
        return answer

    def category_members(self, params: dict[str, str]) -> dict[str, Any]:
        cmtitle = params.get("cmtitle", "")
        if not cmtitle.startswith("Category:"):
            return api_error("invalidcategory", "The category name you entered is not valid.")
        if params.get("cmtype") != "page" or params.get("cmlimit") != "max":
            return api_error("badparams", "expected cmtype=page and cmlimit=max")
        members = CATEGORIES.get(cmtitle.removeprefix("Category:"), [])
        if "cmnamespace" in params:
            members = [m for m in members if str(m[2]) in params["cmnamespace"].split("|")]
        start = 0
        if "cmcontinue" in params:
            if params.get("continue") != "-||":
                return api_error("badcontinue", "Invalid continue param. You should pass the original value.")
            start = int(params["cmcontinue"].split("|")[-1])
        end = start + self.category_page_size
        answer: dict[str, Any] = {
            "query": {"categorymembers": [{"pageid": p, "ns": ns, "title": t} for t, p, ns in members[start:end]]}
        }
        if end < len(members):
            answer["continue"] = {"cmcontinue": f"page|{end:04x}|{end}", "continue": "-||"}
        else:
            answer["batchcomplete"] = True
        return answer


def api_error(code: str, info: str) -> dict[str, Any]:
    return {"error": {"code": code, "info": info, "docref": "See /w/api.php for API usage."}, "servedby": "fake"}


def normalise(title: str) -> str | None:
    """MediaWiki's title normalisation (for these tests): None when invalid."""
    title = " ".join(title.replace("_", " ").split())
    if not title or INVALID_CHARS & set(title):
        return None
    return title[0].upper() + title[1:]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        wiki = self.server.wiki
        parts = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        wiki.requests.append(Request(params, dict(self.headers), wiki.clock.now if wiki.clock else None))
        if parts.path != "/w/api.php":
            status, headers, body = 404, {}, "Not Found"
        else:
            status, headers, body = wiki.answer(params)
        data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if isinstance(body, dict) and "error" in body:
            self.send_header("MediaWiki-API-Error", body["error"]["code"])
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    wiki: FakeWiki


@pytest.fixture
def wiki() -> Iterator[FakeWiki]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.wiki = FakeWiki(url=f"http://127.0.0.1:{server.server_address[1]}/w/api.php")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.wiki
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def clock(wiki: FakeWiki) -> FakeClock:
    wiki.clock = FakeClock()
    return wiki.clock


def client_for(clock: FakeClock, retries: int = 2, backoff: float = 0.5) -> HttpClient:
    return HttpClient(HttpParams(backoff=backoff, retries=retries, user_agent=USER_AGENT), sleep=clock.sleep)


def mw_params(wiki: FakeWiki, **kw: Any) -> MediaWikiParams:
    kw.setdefault("min_interval", 0.0)
    kw.setdefault("min_chars", 20)
    return MediaWikiParams(api_url=wiki.url, **kw)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def base(wiki: FakeWiki) -> str:
    return wiki.url.removesuffix("/w/api.php")


# ---------------------------------------------------------------------------------------------
# End to end


def test_titles_then_categories_end_to_end(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    out = tmp_path / "articles.jsonl"
    params = mw_params(
        wiki,
        titles=[
            "large language model",
            "LLM",
            "Nonexistent article",
            "Bad<title>",
            "Tokenization_(lexical analysis)",
        ],
        categories=["Machine learning", "Category:Natural language processing"],
    )
    count = scrape(params, client_for(clock), out, clock=clock)

    rows = read_jsonl(out)
    assert count == len(rows) == 4
    assert [r["pageid"] for r in rows] == [101, 102, 103, 104]
    assert [r["title"] for r in rows] == [
        "Large language model",
        "Tokenization (lexical analysis)",
        "Attention (machine learning)",
        "Word embedding",
    ]
    assert [r["url"] for r in rows] == [
        f"{base(wiki)}/wiki/Large_language_model",
        f"{base(wiki)}/wiki/Tokenization_(lexical_analysis)",
        f"{base(wiki)}/wiki/Attention_(machine_learning)",
        f"{base(wiki)}/wiki/Word_embedding",
    ]
    assert rows[0]["text"] == LLM_TEXT
    assert rows[1]["text"] == TOKENIZATION_TEXT
    assert rows[3]["text"] == PAGES["Word embedding"][1]
    assert set(rows[0]) == {"title", "pageid", "url", "text"}

    # One title per extracts request; pages already known by id are never fetched again.
    assert wiki.extract_titles() == [
        "large language model",
        "LLM",
        "Nonexistent article",
        "Bad<title>",
        "Tokenization_(lexical analysis)",
        "Attention (machine learning)",
        "Word embedding",
        "Stub",
    ]
    cats = wiki.category_requests()
    assert [c["cmtitle"] for c in cats] == [
        "Category:Machine learning",
        "Category:Machine learning",
        "Category:Natural language processing",
    ]
    assert "cmcontinue" not in cats[0]
    assert (cats[1]["cmcontinue"], cats[1]["continue"]) == ("page|0002|2", "-||")
    assert all(c["cmnamespace"] == "0" for c in cats)
    for request in wiki.requests:
        assert request.headers["User-Agent"] == USER_AGENT
        assert request.params["maxlag"] == "5"
        assert (request.params["format"], request.params["formatversion"]) == ("json", "2")


def test_output_is_utf8_json_lines(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    out = tmp_path / "articles.jsonl"
    assert scrape(mw_params(wiki, titles=["café"]), client_for(clock), out, clock=clock) == 1
    raw = out.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert "Café".encode() in raw
    (row,) = read_jsonl(out)
    assert (row["title"], row["pageid"]) == ("Café", 107)
    assert row["url"] == f"{base(wiki)}/wiki/Caf%C3%A9"


def test_category_continuation_is_followed_to_the_end(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    wiki.category_page_size = 1
    out = tmp_path / "articles.jsonl"
    params = mw_params(wiki, categories=["Machine learning"], min_chars=0)
    assert scrape(params, client_for(clock), out, clock=clock) == 4
    assert [r["pageid"] for r in read_jsonl(out)] == [103, 101, 104, 105]
    tokens = [c.get("cmcontinue") for c in wiki.category_requests()]
    assert tokens == [None, "page|0001|1", "page|0002|2", "page|0003|3"]


def test_max_articles_stops_further_requests(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    out = tmp_path / "articles.jsonl"
    params = mw_params(
        wiki,
        titles=["Large language model", "Tokenization (lexical analysis)"],
        categories=["Machine learning", "Natural language processing"],
        max_articles=3,
    )
    assert scrape(params, client_for(clock), out, clock=clock) == 3
    assert [r["pageid"] for r in read_jsonl(out)] == [101, 102, 103]
    assert wiki.extract_titles() == [
        "Large language model",
        "Tokenization (lexical analysis)",
        "Attention (machine learning)",
    ]
    # Only the first page of the first category was needed.
    assert [c.get("cmcontinue") for c in wiki.category_requests()] == [None]
    assert len(wiki.requests) == 4


def test_max_articles_among_titles_skips_categories(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    out = tmp_path / "articles.jsonl"
    titles = ["Word embedding", "Stub", "Café"]
    params = mw_params(wiki, titles=titles, categories=["Machine learning"], max_articles=1)
    assert scrape(params, client_for(clock), out, clock=clock) == 1
    assert wiki.extract_titles() == ["Word embedding"]
    assert wiki.category_requests() == []


def test_duplicates_are_written_once(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    out = tmp_path / "articles.jsonl"
    params = mw_params(
        wiki,
        titles=["Word embedding", "LLM", "Word embedding", "Large language model"],
        categories=["Natural language processing", "Machine learning"],
    )
    assert scrape(params, client_for(clock), out, clock=clock) == 4
    assert [r["pageid"] for r in read_jsonl(out)] == [104, 101, 102, 103]
    # the repeated title is not asked again; "Large language model" is (its id is not known up front)
    assert wiki.extract_titles() == [
        "Word embedding",
        "LLM",
        "Large language model",
        "Tokenization (lexical analysis)",
        "Attention (machine learning)",
        "Stub",
    ]


def test_missing_invalid_empty_and_short_pages_are_skipped(
    wiki: FakeWiki, clock: FakeClock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "articles.jsonl"
    titles = ["Nonexistent article", "Bad<title>", "A|B", "Empty page", "Stub", "Word embedding"]
    with caplog.at_level("WARNING", logger="scratchgpt.plumbing.sources.mediawiki"):
        assert scrape(mw_params(wiki, titles=titles), client_for(clock), out, clock=clock) == 1
    assert [r["title"] for r in read_jsonl(out)] == ["Word embedding"]
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    for title in ["Nonexistent article", "Bad<title>", "A|B", "Empty page", "Stub"]:
        assert repr(title) in warnings
    assert "A|B" not in wiki.extract_titles()  # never sent: the API would read it as two titles


def test_nothing_usable_raises_and_leaves_no_file(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    out = tmp_path / "articles.jsonl"
    params = mw_params(wiki, titles=["Nonexistent article", "Stub"], categories=["No such category"])
    with pytest.raises(SourceFailed, match="no articles"):
        scrape(params, client_for(clock), out, clock=clock)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Failures


def test_429_and_503_are_retried(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    wiki.fail_next(429, {"Retry-After": "7"}, "Too Many Requests")
    wiki.fail_next(503, {}, "Service Unavailable")
    out = tmp_path / "articles.jsonl"
    assert scrape(mw_params(wiki, titles=["Word embedding"]), client_for(clock, retries=2), out, clock=clock) == 1
    assert clock.sleeps == [7.0, 1.0]  # Retry-After, then backoff 0.5 * 2**1
    assert wiki.extract_titles() == ["Word embedding"] * 3
    assert read_jsonl(out)[0]["pageid"] == 104


def test_persistent_500_fails_and_leaves_nothing(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    wiki.always = (500, {}, "Internal Server Error")
    out = tmp_path / "articles.jsonl"
    with pytest.raises(SourceFailed, match="HTTP 500"):
        scrape(mw_params(wiki, titles=["Word embedding"]), client_for(clock, retries=2), out, clock=clock)
    assert len(wiki.requests) == 3
    assert list(tmp_path.iterdir()) == []


def test_failure_after_some_articles_leaves_no_partial_file(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    out = tmp_path / "articles.jsonl"
    client = client_for(clock, retries=0)
    params = mw_params(wiki, titles=["Word embedding", "Large language model"])
    original = client.get

    def fail_second(url: str, params: dict[str, Any] | None = None) -> Any:
        if len(wiki.requests) == 1:
            wiki.always = (502, {}, "Bad Gateway")
        return original(url, params=params)

    client.get = fail_second  # type: ignore[method-assign]
    with pytest.raises(SourceFailed, match="HTTP 502"):
        scrape(params, client, out, clock=clock)
    assert wiki.extract_titles() == ["Word embedding", "Large language model"]
    assert list(tmp_path.iterdir()) == []


def test_api_error_raises_naming_the_code(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    wiki.fail_next(200, {}, api_error("readapidenied", "You need read permission to use this module."))
    out = tmp_path / "articles.jsonl"
    with pytest.raises(SourceFailed, match="readapidenied: You need read permission"):
        scrape(mw_params(wiki, titles=["Word embedding"]), client_for(clock), out, clock=clock)
    assert len(wiki.requests) == 1
    assert not out.exists()


def test_non_json_answer_raises(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    wiki.fail_next(200, {"Content-Type": "text/html"}, "<html>maintenance</html>")
    with pytest.raises(SourceFailed, match="did not answer JSON"):
        scrape(mw_params(wiki, titles=["Word embedding"]), client_for(clock), tmp_path / "a.jsonl", clock=clock)


def test_maxlag_is_waited_out_and_retried(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    lagged = api_error("maxlag", "Waiting for db1: 7 seconds lagged.")
    lagged["error"] |= {"host": "db1", "lag": 7, "type": "db"}
    wiki.fail_next(200, {"Retry-After": "3", "X-Database-Lag": "7"}, lagged)
    out = tmp_path / "articles.jsonl"
    assert scrape(mw_params(wiki, titles=["Word embedding"]), client_for(clock), out, clock=clock) == 1
    assert clock.sleeps == [3.0]
    assert wiki.extract_titles() == ["Word embedding"] * 2
    assert read_jsonl(out)[0]["title"] == "Word embedding"


def test_persistent_maxlag_gives_up(wiki: FakeWiki, clock: FakeClock, tmp_path: Path) -> None:
    wiki.always = (200, {"Retry-After": "5"}, api_error("maxlag", "Waiting for db1: 9 seconds lagged."))
    out = tmp_path / "articles.jsonl"
    with pytest.raises(SourceFailed, match="maxlag.*gave up after 3 tries"):
        scrape(mw_params(wiki, titles=["Word embedding"]), client_for(clock, retries=2), out, clock=clock)
    assert len(wiki.requests) == 3
    assert clock.sleeps == [5.0, 5.0]
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Rate limiting


@pytest.mark.parametrize("cost, expected_sleeps", [(0.25, [0.75, 0.75, 0.75]), (1.5, [])])
def test_requests_start_at_least_min_interval_apart(
    wiki: FakeWiki, clock: FakeClock, tmp_path: Path, cost: float, expected_sleeps: list[float]
) -> None:
    wiki.request_cost = cost
    titles = ["Word embedding", "Café"]
    params = mw_params(wiki, titles=titles, categories=["Natural language processing"], min_interval=1.0)
    assert scrape(params, client_for(clock), tmp_path / "a.jsonl", clock=clock) == 3

    starts = [r.at for r in wiki.requests]
    assert len(starts) == 4  # two titles, one category page, one category member
    assert clock.sleeps == pytest.approx(expected_sleeps)
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(starts, starts[1:]))


# ---------------------------------------------------------------------------------------------
# Pure helpers


DROP = ["See also", "References", "External links"]


def test_clean_extract_removes_headings_and_collapses_blank_lines() -> None:
    text = "Intro line.   \n\n\n\n== History ==\nFirst.\t \n\n\n=== Early days ===\n\nSecond.\n\n\n"
    assert clean_extract(text, DROP) == "Intro line.\n\nFirst.\n\nSecond."


def test_clean_extract_drops_sections_with_their_subsections() -> None:
    text = (
        "Intro.\n\n== References ==\nRef 1.\n\n=== Books ===\nA book.\n\n==== Old books ====\nOld.\n"
        "\n== Legacy ==\nKept.\n\n== external  LINKS ==\nhttp://example.org\n"
        "\n== History ==\nAlso kept.\n\n=== See also ===\nDropped subsection.\n\n=== Today ===\nKept too."
    )
    assert clean_extract(text, DROP) == "Intro.\n\nKept.\n\nAlso kept.\n\nKept too."
    # without a drop list only the headings go
    assert clean_extract(text, []) == (
        "Intro.\n\nRef 1.\n\nA book.\n\nOld.\n\nKept.\n\nhttp://example.org\n\n"
        "Also kept.\n\nDropped subsection.\n\nKept too."
    )


def test_clean_extract_removes_math_and_empty_parentheses() -> None:
    text = (
        "Energy {\\displaystyle E=mc^{2}} is mass.\n"
        "Euler ( ) wrote {\\textstyle \\sum _{n=1}^{\\infty }{\\frac {1}{n^{2}}}={\\frac {\\pi ^{2}}{6}}}.\n"
        "Born (; 1707) in Basel (; ) near Bern (, ).\n"
        "A set \\{ x \\} stays."
    )
    assert clean_extract(text, DROP) == (
        "Energy is mass.\nEuler wrote.\nBorn (1707) in Basel near Bern.\nA set \\{ x \\} stays."
    )


def test_remove_math_handles_nesting_escapes_and_unbalanced_braces() -> None:
    assert remove_math("a{\\displaystyle \\{ {x}^{ {y} } \\}}b") == "ab"
    assert remove_math("x{\\displaystyle y}z{\\displaystyle w}") == "xz"
    unbalanced = "keep {\\displaystyle {x} and the rest"
    assert remove_math(unbalanced) == unbalanced
    assert remove_math("{\\displaystylefoo}") == "{\\displaystylefoo}"


def test_category_title_and_article_url() -> None:
    assert category_title("Machine learning") == "Category:Machine learning"
    assert category_title(" category:Machine learning ") == "Category:Machine learning"
    assert category_title("Category: Physics") == "Category:Physics"
    api = "https://en.wikipedia.org/w/api.php"
    assert article_url(api, "Ender's Game") == "https://en.wikipedia.org/wiki/Ender%27s_Game"
    assert article_url(api, "C (programming language)") == "https://en.wikipedia.org/wiki/C_(programming_language)"
    assert article_url(api, "AC/DC") == "https://en.wikipedia.org/wiki/AC/DC"
    assert article_url(api, "Zürich") == "https://en.wikipedia.org/wiki/Z%C3%BCrich"
