"""An HTTP server on 127.0.0.1 whose answers a test scripts path by path.

    server.route("/f.txt", Reply(body=b"..."))                       # always this
    server.route("/f.txt", Reply(status=503), Reply(body=b"..."))    # 503 once, then the body

Replies are used in order and the last one repeats. Byte ranges are honoured when a reply
has ``ranges=True``; ``truncate`` sends a full Content-Length but only that many bytes, then
drops the connection; ``delay`` sleeps before answering. Hostile bodies: ``repeat`` sends the
body that many times over (a huge answer built on the fly), ``length=False`` leaves out
Content-Length (the body ends when the connection closes), ``trickle`` sends one byte every
that many seconds. What each answer wrote is counted in ``sent``. Every request is recorded.
"""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Reply:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    truncate: int | None = None
    delay: float = 0.0
    ranges: bool = True
    repeat: int = 1
    length: bool = True
    trickle: float = 0.0


@dataclass
class Request:
    path: str
    headers: dict[str, str]


class ScriptedServer:
    def __init__(self) -> None:
        self.routes: dict[str, list[Reply]] = {}
        self.requests: list[Request] = []
        self.sent: list[int] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.requests.append(Request(self.path, dict(self.headers)))
                    replies = server.routes.get(self.path.split("?")[0])
                    reply = (replies.pop(0) if len(replies) > 1 else replies[0]) if replies else Reply(status=404)
                if reply.delay:
                    time.sleep(reply.delay)
                body, status, headers = reply.body, reply.status, dict(reply.headers)
                rng = self.headers.get("Range")
                if rng and reply.ranges and status == 200 and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                    body, status = body[start:], 206
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if reply.length:
                    self.send_header("Content-Length", str(len(body) * reply.repeat))
                self.end_headers()
                self.close_connection = True
                sent = 0
                try:
                    for _ in range(reply.repeat):
                        part = body if reply.truncate is None else body[: reply.truncate]
                        if reply.trickle:
                            for i in range(len(part)):
                                time.sleep(reply.trickle)
                                self.wfile.write(part[i : i + 1])
                                self.wfile.flush()
                                sent += 1
                        else:
                            self.wfile.write(part)
                            sent += len(part)
                    self.wfile.flush()
                except OSError:  # the client hung up (what a bounded download does)
                    pass
                finally:
                    with server.lock:
                        server.sent.append(sent)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def route(self, path: str, *replies: Reply) -> str:
        self.routes[path] = list(replies)
        return self.url(path)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path.split("?")[0] == path]

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
