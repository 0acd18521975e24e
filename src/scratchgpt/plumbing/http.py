"""HTTP for every download and request the pipeline makes: timeouts, retries with backoff
(honouring Retry-After), redirects followed by hand with the same URL rules, resumable
streaming into a file, redacted URLs in messages. Plain http only to this machine.

Every file transfer is bounded: it stops once it passes a byte cap (the file's declared size,
else a maximum), a compressed body (gzip, deflate) is decoded under that same cap and any other
encoding is refused, and the transfer of one file from one source, retries included, ends at a
total deadline however slowly the bytes trickle in.
"""

from __future__ import annotations

import email.utils
import logging
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import requests
import urllib3
from tqdm.auto import tqdm

from scratchgpt.errors import PipelineError
from scratchgpt.plumbing.sections.base import allowed_url
from scratchgpt.plumbing.sections.download import HttpParams

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK = 1 << 16
MAX_REDIRECTS = 10
MAX_ANSWER = 64 << 20  # an API answer read into memory (a MediaWiki page, a judge's reply) is far smaller
T = TypeVar("T")


class SourceFailed(PipelineError):
    """One source could not deliver the file; the reason is the message."""


class TooLarge(SourceFailed):
    """The body passed the byte cap (or announced that it would): no use keeping or resuming it."""


class HttpStatusError(SourceFailed):
    """The server answered with an error status that is not retried; ``status`` and ``headers`` say which."""

    def __init__(self, message: str, status: int, headers: Mapping[str, str]):
        super().__init__(message)
        self.status, self.headers = status, headers


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def redact(url: str) -> str:
    """``url`` with any user name and password replaced by ***, for logs and messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


def check_remote_url(url: str, allow_http: bool = False) -> None:
    """Remote sources must use HTTPS; plain HTTP is allowed only to a server on this machine,
    or to any host when the caller was explicitly allowed it (``allow_http``)."""
    if not (allowed_url(url) or (allow_http and url.startswith("http://"))):
        raise SourceFailed(f"refused: {redact(url)} is not https:// (plain http only for 127.0.0.1)")


class HttpClient:
    """A requests session with timeouts, a User-Agent and retries with exponential backoff.

    Timeouts, broken connections, HTTP 408/425/429 and 5xx are retried (honouring Retry-After);
    other HTTP errors fail at once. ``sleep`` is injectable so tests run without waiting.
    ``allow_http`` lets plain http reach hosts other than this machine (the judge's
    ``evaluate.judge_allow_http``); downloads never set it.
    """

    def __init__(
        self,
        policy: HttpParams | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        allow_http: bool = False,
    ):
        self.allow_http = allow_http
        self.policy = policy or HttpParams()
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = self.policy.user_agent
        # Byte counts must match Content-Length, so ask servers not to compress.
        self.session.headers["Accept-Encoding"] = "identity"
        self.sleep = sleep
        self.clock = clock

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.policy.connect_timeout, self.policy.read_timeout)

    def retrying(self, attempt: Callable[[], T], what: str, deadline: float | None = None) -> T:
        """Call ``attempt`` until it succeeds, retrying timeouts, lost connections and _Retryable.
        With a ``deadline`` (a ``clock`` time), a retry whose backoff would pass it is not made."""
        tries = self.policy.retries + 1
        for n in range(tries):
            try:
                return attempt()
            except _Retryable as e:
                reason, wait = str(e), e.retry_after
            except requests.Timeout as e:
                reason, wait = f"timed out ({type(e).__name__})", None
            except requests.ConnectionError as e:
                host = _unresolved_host(e)
                if host:  # no DNS answer: offline or a wrong host name, not worth retrying
                    raise SourceFailed(f"cannot resolve host {host} (offline?)") from None
                reason, wait = f"connection failed ({_short(e)})", None
            if n + 1 == tries:
                raise SourceFailed(f"{reason}; gave up after {tries} tries")
            if wait is None:
                wait = self.policy.backoff * 2**n
            wait = min(wait, self.policy.max_backoff)
            if deadline is not None and self.clock() + wait >= deadline:
                raise SourceFailed(
                    f"{reason}; no time left for another try within total_timeout {self.policy.total_timeout:g} s"
                )
            log.warning("%s: %s; retry %d/%d in %.1fs", what, reason, n + 1, tries - 1, wait)
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _send(
        self, url: str, method: str = "GET", timeout: tuple[float, float] | None = None, **kwargs: Any
    ) -> requests.Response:
        """One request, following redirects (of a GET) only to allowed URLs; retryable statuses
        raise _Retryable, other errors raise SourceFailed."""
        for _ in range(MAX_REDIRECTS + 1):
            check_remote_url(url, self.allow_http)
            resp = self.session.request(method, url, timeout=timeout or self.timeout, allow_redirects=False, **kwargs)
            if not resp.is_redirect or method != "GET":
                break
            resp.close()
            target = urllib.parse.urljoin(url, resp.headers["Location"])
            try:
                check_remote_url(target, self.allow_http)
            except SourceFailed:
                raise SourceFailed(f"refused redirect to {redact(target)} (not https)") from None
            url = target
            kwargs.pop("params", None)  # the Location already carries its query
        else:
            raise SourceFailed(f"more than {MAX_REDIRECTS} redirects")
        if resp.status_code in RETRY_STATUS:
            resp.close()
            raise _Retryable(
                f"HTTP {resp.status_code} {resp.reason}", retry_after_seconds(resp.headers.get("Retry-After"))
            )
        if resp.status_code >= 400:
            status, headers = resp.status_code, resp.headers
            raise HttpStatusError(f"HTTP {status} {resp.reason}{_error_excerpt(resp)}", status, headers)
        return resp

    def send(self, url: str, method: str = "GET", **kwargs: Any) -> requests.Response:
        """One request without retries, for callers that read the answer themselves inside
        :meth:`retrying` (``stream=True``); statuses are handled as by every other request."""
        return self._send(url, method, **kwargs)

    def get(self, url: str, params: dict[str, Any] | None = None, deadline: float | None = None) -> requests.Response:
        """GET with retries; the whole body is read (see :meth:`_answer`)."""
        return self._answer(url, params=params, deadline=deadline)

    def post_json(self, url: str, payload: Any) -> requests.Response:
        """POST a JSON body with retries (timeouts, 429, 5xx); the whole answer is read (see :meth:`_answer`)."""
        return self._answer(url, "POST", json=payload)

    def _answer(self, url: str, method: str = "GET", deadline: float | None = None, **kwargs: Any) -> requests.Response:
        """A request whose whole answer is read into memory: at most MAX_ANSWER bytes once
        decoded, all tries together within the policy's ``total_timeout`` (or until ``deadline``,
        a ``clock`` time, for a caller whose total_timeout spans several requests)."""
        limit, what = self.policy.total_timeout, redact(url)
        deadline = self.clock() + limit if deadline is None else deadline

        def late(got: int) -> SourceFailed:
            return SourceFailed(f"{what}: answer not complete after total_timeout {limit:g} s ({got} bytes); stopped")

        def attempt() -> requests.Response:
            left = deadline - self.clock()
            if left <= 0:
                raise late(0)
            timeout = (min(self.policy.connect_timeout, left), min(self.policy.read_timeout, left))
            resp = self._send(url, method, stream=True, timeout=timeout, **kwargs)
            parts: list[bytes] = []
            got = 0
            with resp:
                decoder = _Decoder(resp.headers.get("Content-Encoding", ""), what)
                length = resp.headers.get("Content-Length")
                try:
                    while chunk := resp.raw.read1(CHUNK, decode_content=False):
                        for piece in decoder.decode(chunk):
                            got += len(piece)
                            if got > MAX_ANSWER:
                                raise TooLarge(f"{what}: answer passed {MAX_ANSWER} bytes; stopped")
                            parts.append(piece)
                        if self.clock() > deadline:
                            raise late(got)
                    list(decoder.finish())
                except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
                    if self.clock() > deadline:
                        raise late(got) from None
                    raise _Retryable(f"connection broken after {got} bytes ({_short(e)})") from e
            if length and length.isdigit() and decoder.z is None and got != int(length):
                raise _Retryable(f"truncated answer: got {got} of {length} bytes")
            resp._content = b"".join(parts)  # what .content, .text and .json() read
            return resp

        return self.retrying(attempt, what, deadline)

    def download(
        self,
        url: str,
        dest: Path,
        desc: str,
        resume: bool = False,
        max_bytes: int | None = None,
        cap_source: str = "download.http.max_bytes",
        deadline: float | None = None,
    ) -> None:
        """Stream ``url`` into ``dest``. A retry after a broken transfer resumes with an HTTP Range,
        and so does a new call with ``resume`` when ``dest`` holds the start of the file.

        The file may not pass ``max_bytes`` (default: the policy's; ``cap_source`` names where
        the cap comes from in messages): a longer body, or one announcing more, fails with
        :class:`TooLarge` after at most that many bytes were written. A gzip or deflate body is
        decoded under the same cap; other encodings are refused. All tries together end at the
        policy's ``total_timeout`` (or at ``deadline``, a ``clock`` time, when the caller's
        total_timeout spans several files)."""
        cap = self.policy.max_bytes if max_bytes is None else max_bytes
        limit = self.policy.total_timeout
        deadline = self.clock() + limit if deadline is None else deadline
        if not (resume and dest.is_file()):
            dest.write_bytes(b"")

        def late(got: int) -> SourceFailed:
            return SourceFailed(f"{desc}: not complete after total_timeout {limit:g} s ({got} bytes); stopped")

        def too_large(got: int) -> TooLarge:
            return TooLarge(f"{desc}: body passed {cap} bytes ({cap_source}) after {got} bytes; stopped")

        def attempt() -> None:
            have = dest.stat().st_size
            left = deadline - self.clock()
            if left <= 0:
                raise late(have)
            headers = {"Range": f"bytes={have}-"} if have else {}
            timeout = (min(self.policy.connect_timeout, left), min(self.policy.read_timeout, left))
            resp = self._send(url, headers=headers, stream=True, timeout=timeout)
            with resp:
                decoder = _Decoder(resp.headers.get("Content-Encoding", ""), desc)
                encoded = decoder.z is not None
                if have and (encoded or not _resumes_at(resp, have)):
                    have = 0  # the server sent the whole file again
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length and length.isdigit() and not encoded else None
                if total is not None and total > cap:
                    raise TooLarge(f"{desc}: the server announces {total} bytes, more than {cap} ({cap_source})")
                got = have
                with open(dest, "r+b" if have else "wb") as f, progress_bar(desc, total, have) as bar:
                    f.seek(have)
                    f.truncate()

                    def write(piece: bytes) -> None:
                        nonlocal got
                        if got + len(piece) > cap:
                            raise too_large(got + len(piece))
                        f.write(piece)
                        got += len(piece)
                        bar.update(len(piece))

                    try:
                        # read1 hands over every byte that arrived, so a broken transfer
                        # resumes where it stopped, and a trickle meets the deadline.
                        while chunk := resp.raw.read1(CHUNK, decode_content=False):
                            for piece in decoder.decode(chunk):
                                write(piece)
                            if self.clock() > deadline:
                                raise late(got)
                        for piece in decoder.finish():
                            write(piece)
                    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as e:
                        if self.clock() > deadline:
                            raise late(got) from None
                        raise _Retryable(f"connection broken after {got} bytes ({_short(e)})") from e
                if total is not None and got != total:
                    raise _Retryable(f"truncated body: got {got} of {total} bytes")

        self.retrying(attempt, redact(url), deadline)


class _Decoder:
    """Undoes a gzip or deflate Content-Encoding in pieces of at most CHUNK bytes, so that a
    small compressed body cannot expand in memory beyond what the byte cap lets through."""

    def __init__(self, encoding: str, desc: str):
        self.encoding, self.desc = encoding.strip().lower(), desc
        if self.encoding in ("", "identity"):
            self.z = None
        elif self.encoding in ("gzip", "x-gzip"):
            self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.encoding == "deflate":
            self.z = zlib.decompressobj()
        else:
            raise SourceFailed(f"{desc}: refused Content-Encoding {encoding!r} (asked for identity)")

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self.z is None:
            yield data
            return
        try:
            while data and not self.z.eof:
                piece = self.z.decompress(data, CHUNK)
                data = self.z.unconsumed_tail
                if piece:
                    yield piece
        except zlib.error as e:
            raise SourceFailed(f"{self.desc}: corrupt {self.encoding} body ({e})") from None

    def finish(self) -> Iterator[bytes]:
        if self.z is not None and not self.z.eof:
            raise _Retryable(f"{self.encoding} body ended early")
        return iter(())


def _error_excerpt(resp: requests.Response) -> str:
    """ ": <the start of the body>" of a textual error answer (e.g. "model 'x' not found"), else ""."""
    try:
        if not resp.headers.get("Content-Type", "").startswith(("text/", "application/json")):
            return ""
        text = " ".join(resp.raw.read(300, decode_content=True).decode("utf-8", "replace").split())
    except Exception:  # the excerpt is a courtesy; the status is the error
        return ""
    finally:
        resp.close()
    return f": {text[:200]}" if text else ""


def _resumes_at(resp: requests.Response, offset: int) -> bool:
    if resp.status_code != 206:
        return False
    rng = resp.headers.get("Content-Range", "")  # "bytes 100-199/200"
    try:
        return int(rng.split()[1].split("-")[0]) == offset
    except (IndexError, ValueError):
        return False


def _unresolved_host(e: requests.ConnectionError) -> str | None:
    reason = getattr(e.args[0], "reason", None) if e.args else None
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return getattr(reason.conn, "host", None) or "?"
    return None


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def progress_bar(desc: str, total: int | None, initial: int = 0) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        leave=False,
        disable=None,
        miniters=1,
    )


# ---------------------------------------------------------------------------------------------
# Sources
