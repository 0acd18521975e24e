"""A small Hugging Face Hub on 127.0.0.1, for huggingface_hub pointed at it with ``HF_ENDPOINT``:
model repositories at commits, served at the Hub's URL layout.

- ``GET /api/models/<owner>/<name>/tree/<revision>``: the files (``oid``; ``lfs`` with the
  sha256 for weights, as the Hub stores them);
- ``HEAD``/``GET /<owner>/<name>/resolve/<revision>/<file>``: the file, with ``X-Repo-Commit``
  and ``ETag`` (an LFS file's sha256, else its git blob sha1);
- errors as the Hub reports them: 404 with ``X-Error-Code`` RepoNotFound, RevisionNotFound or
  EntryNotFound.

Every request is recorded (method, path, Authorization header), so tests can tell what was fetched.

A hostile Hub for the download guarantees: ``listed_sizes`` overrides the sizes the listing gives,
``responders`` take over the GET of a file (send more than listed, trickle, redirect), and a
request made through the server as a proxy (an absolute URL, e.g. ``http://mirror.example/...``
with ``HTTP_PROXY`` pointed here) is served like any other and recorded in ``proxied`` too.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = "openai-community/gpt2-tiny"  # what the `hub` fixture (conftest.py) serves, at COMMIT
COMMIT = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".ckpt")
TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)/?$")
RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


Responder = Callable[[http.server.BaseHTTPRequestHandler, bytes], bool]  # True: it answered


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeHub:
    """Repositories: ``repos[repo_id][commit][file name] = bytes``."""

    repos: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    proxied: list[tuple[str, str | None]] = field(default_factory=list)  # (absolute URL, Authorization)
    listed_sizes: dict[str, int] = field(default_factory=dict)  # file name → the size the listing claims
    responders: dict[str, Responder] = field(default_factory=dict)  # file name → its GET's own answer

    def add(self, repo_id: str, commit: str, folder: Path) -> None:
        """The files of ``folder`` as ``repo_id`` at ``commit``."""
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        self.repos.setdefault(repo_id, {})[commit] = files

    def fetched(self, name: str) -> int:
        """How many GETs of a file named ``name`` were served."""
        return sum(1 for method, path, _ in self.requests if method == "GET" and path.endswith("/" + name))

    def start(self) -> str:
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, headers: dict[str, str], body: bytes = b"", send_body: bool = True):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def _error(self, code: str, send_body: bool, commit: str | None = None):
                headers = {"X-Error-Code": code, "X-Error-Message": code}
                if commit:
                    headers["X-Repo-Commit"] = commit
                self._answer(404, headers, json.dumps({"error": code}).encode(), send_body)

            def _serve(self, send_body: bool):
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path, self.headers.get("Authorization")))
                if self.path.startswith("http://"):
                    hub.proxied.append((self.path, self.headers.get("Authorization")))
                tree, resolve = TREE.match(path), RESOLVE.match(path)
                match = tree or resolve
                if not match:
                    return self._answer(404, {}, b"", send_body)
                repo_id, revision = match.group(1), match.group(2)
                if repo_id not in hub.repos:
                    return self._error("RepoNotFound", send_body)
                if revision not in hub.repos[repo_id]:
                    return self._error("RevisionNotFound", send_body)
                files = hub.repos[repo_id][revision]
                if tree:
                    entries = []
                    for name, data in files.items():
                        size = hub.listed_sizes.get(name, len(data))
                        entry = {"type": "file", "path": name, "size": size, "oid": git_blob_sha1(data)}
                        if name.endswith(LFS_SUFFIXES):
                            sha = hashlib.sha256(data).hexdigest()
                            entry["lfs"] = {"oid": sha, "size": size, "pointerSize": 134}
                        entries.append(entry)
                    return self._answer(200, {"Content-Type": "application/json"}, json.dumps(entries).encode())
                name = resolve.group(3)
                if name not in files:
                    return self._error("EntryNotFound", send_body, commit=revision)
                data = files[name]
                responder = hub.responders.get(name)
                if send_body and responder is not None and responder(self, data):
                    return None
                lfs = name.endswith(LFS_SUFFIXES)
                etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
                self._answer(200, {"X-Repo-Commit": revision, "ETag": f'"{etag}"'}, data, send_body)

            def do_GET(self):
                self._serve(True)

            def do_HEAD(self):
                self._serve(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self.url

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _body_start(handler: http.server.BaseHTTPRequestHandler, length: int | None) -> None:
    handler.send_response(200)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()
    handler.close_connection = True


def flood(extra: int, announce: int | None = None, watch: Path | None = None, seen: dict | None = None) -> Responder:
    """The file, then ``extra`` more bytes (announced as ``announce`` bytes, else no length at all).
    ``seen["sent"]`` counts what went out before the client hung up; ``seen["partial"]`` is the
    largest ``*.incomplete`` file under ``watch`` found after each piece."""
    seen = {} if seen is None else seen

    def respond(handler: http.server.BaseHTTPRequestHandler, data: bytes) -> bool:
        seen.update(sent=0, partial=0, done=False)  # before the headers: the client may hang up on them
        pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)] + [b"\0" * 65536] * (extra // 65536)
        try:
            _body_start(handler, announce)
            for piece in pieces:
                handler.wfile.write(piece)
                seen["sent"] += len(piece)
                if watch is not None:
                    sizes = [f.stat().st_size for f in watch.rglob("*.incomplete") if f.is_file()]
                    seen["partial"] = max([seen["partial"], *sizes])
        except OSError:  # the client hung up
            pass
        finally:
            seen["done"] = True  # what the counts say is final
        return True

    return respond


def trickle(every: float, seen: dict | None = None) -> Responder:
    """The file (its length announced) one byte every ``every`` seconds, for at most a minute."""
    seen = {} if seen is None else seen

    def respond(handler: http.server.BaseHTTPRequestHandler, data: bytes) -> bool:
        _body_start(handler, len(data))
        seen["sent"] = 0
        try:
            for i in range(min(len(data), int(60 / every))):
                handler.wfile.write(data[i : i + 1])
                seen["sent"] += 1
                time.sleep(every)
        except OSError:
            pass
        return True

    return respond


def redirect(location: str) -> Responder:
    """A 302 to ``location`` + the request's path; a request that arrives through the server as
    a proxy (at that location) gets the file."""

    def respond(handler: http.server.BaseHTTPRequestHandler, data: bytes) -> bool:
        if handler.path.startswith("http://"):
            return False
        handler._answer(302, {"Location": location.rstrip("/") + handler.path})
        return True

    return respond


def gpt2_folder(transformers, mirror: Path, folder: Path, seed: int = 3) -> Path:
    """A tiny random GPT-2 as openai-community's repositories hold it: config.json,
    model.safetensors, vocab.json and merges.txt (GPT-2's own BPE files from the mirror)."""
    from fakes import hf_model

    hf_model(transformers, seed=seed, vocab_size=50257, n_positions=32).save_pretrained(folder)
    shutil.copy(mirror / "gpt2" / "encoder.json", folder / "vocab.json")
    shutil.copy(mirror / "gpt2" / "vocab.bpe", folder / "merges.txt")
    return folder
