"""Real servers on 127.0.0.1 for remote-input tests: a file server that misbehaves on request, and moto for S3.

:class:`FileServer` serves in-memory files over HTTP/1.1 (HEAD, GET, byte
ranges, ``Content-MD5``) and can be told, per file, to answer the next requests
with an HTTP status, to stall, to reset the connection, to cut the body short,
to corrupt it or to send an HTML error page; it can require basic auth or a
query-string token, and counts requests and concurrent requests.

tests/conftest.py belongs to other tests, so these fixtures live here and a test
module imports them into its namespace (``from _servers import file_server, s3``).
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict, deque
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HTML_ERROR = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class FileServer:
    """An HTTP server of in-memory files that fails when told to."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.plans: dict[tuple[str, str], deque] = defaultdict(deque)
        self.status: dict[str, int] = {}  # a status every request of a file gets
        self.content_md5: dict[str, str] = {}  # a Content-MD5 header to send instead of the true one
        self.requests: Counter = Counter()  # (method, name) -> count
        self.seen_queries: list[str] = []
        self.seen_authorization: list[str | None] = []
        self.basic_auth: tuple[str, str] | None = None
        self.token: str | None = None  # required as ?token=...
        self.stall_seconds = 3.0
        self.delay_seconds = 0.0  # before every GET body, to make requests overlap
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.handle_error = lambda request, address: None  # a client that gave up is not news
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def serve(self, paths: list) -> list[str]:
        """Serve local files as d0.nc, d1.nc, ... (their bytes as they are now); their URLs."""
        for i, path in enumerate(paths):
            self.files[f"d{i}.nc"] = Path(path).read_bytes()
        return [self.url(f"d{i}.nc") for i in range(len(paths))]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def fail(self, name: str, *actions: int | str, method: str = "GET") -> None:
        """Answer the next requests of ``name`` with ``actions``: a status, "stall", "reset",
        "truncate", "corrupt" or "html"; later requests are served normally."""
        self.plans[(method, name)].extend(actions)

    def count(self, name: str, method: str = "GET") -> int:
        return self.requests[(method, name)]

    def start(self) -> "FileServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_action(self, method: str, name: str) -> int | str | None:
        with self._lock:
            plan = self.plans.get((method, name))
            return plan.popleft() if plan else None

    def _handler_class(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
                      head: bool = False) -> None:
                self.send_response(status, REASONS.get(status))
                for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _serve(self, head: bool) -> None:
                parts = urllib.parse.urlsplit(self.path)
                name = urllib.parse.unquote(parts.path.lstrip("/"))
                with server._lock:
                    server.requests[(self.command, name)] += 1
                    server.seen_queries.append(parts.query)
                    server.seen_authorization.append(self.headers.get("Authorization"))
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    self._respond(name, parts.query, head)
                finally:
                    with server._lock:
                        server.active -= 1

            def _respond(self, name: str, query: str, head: bool) -> None:
                if server.basic_auth is not None:
                    expected = "Basic " + base64.b64encode(":".join(server.basic_auth).encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        self._send(401, b"login required", {"WWW-Authenticate": 'Basic realm="data"'}, head)
                        return
                if server.token is not None and urllib.parse.parse_qs(query).get("token") != [server.token]:
                    self._send(403, b"bad token", head=head)
                    return
                action = server._next_action(self.command, name)
                status = server.status.get(name) or (action if isinstance(action, int) else None)
                if status:
                    self._send(status, b"<html><body>error %d</body></html>" % status,
                               {"Content-Type": "text/html"}, head)
                    return
                if action == "reset":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "stall":
                    time.sleep(server.stall_seconds)
                body = server.files.get(name)
                if action == "html":
                    self._send(200, HTML_ERROR, {"Content-Type": "text/html"}, head)
                    return
                if body is None:
                    self._send(404, b"<html><body>not found</body></html>", {"Content-Type": "text/html"}, head)
                    return
                md5 = server.content_md5.get(name) or base64.b64encode(hashlib.md5(body).digest()).decode()
                headers = {"Content-Type": "application/x-netcdf", "Accept-Ranges": "bytes"}
                status = 200
                ranged = self.headers.get("Range")
                if ranged and ranged.startswith("bytes="):
                    start_text, _, end_text = ranged[len("bytes="):].partition("-")
                    start = int(start_text)
                    end = min(int(end_text) if end_text else len(body) - 1, len(body) - 1)
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                    body, status = body[start:end + 1], 206
                else:
                    headers["Content-MD5"] = md5
                if not head and server.delay_seconds:
                    time.sleep(server.delay_seconds)
                if action == "corrupt":
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1:]
                if action == "truncate" and not head:
                    self.send_response(status)
                    for key, value in {"Content-Length": str(len(body)), **headers}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(status, body, headers, head)

        return Handler


@pytest.fixture
def file_server():
    server = FileServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto S3 server on a free port of 127.0.0.1 (s3fs cannot use moto's in-process mock)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint):
    """``(storage options, bucket)``: a fresh bucket on the moto server and the options that reach it."""
    import s3fs

    options = {
        "key": "arcoforge-test-key",
        "secret": "arcoforge-test-secret",
        "endpoint_url": moto_endpoint,
        "client_kwargs": {"region_name": "eu-west-1"},
    }
    bucket = f"arcoforge-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(bucket)
    return options, bucket


def s3_filesystem(options: dict):
    """A fresh (uncached, so listings are current) s3fs filesystem for ``options``."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, **options)


class FaultyS3Proxy:
    """An HTTP proxy in front of the moto server that answers 503 SlowDown to chosen writes.

    Each object whose key contains ``fail_keys_containing`` gets a 503 the first
    time it is PUT, then passes: an object store throttling in the middle of a bake.
    """

    def __init__(self, upstream: str, fail_keys_containing: str = "/c/"):
        import http.client
        import threading
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.failed: list[str] = []
        self.fail_keys_containing = fail_keys_containing
        target = urllib.parse.urlparse(upstream)
        proxy = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.command == "PUT" and proxy.fail_keys_containing in self.path:
                    with lock:
                        first = self.path not in proxy.failed
                        if first:
                            proxy.failed.append(self.path)
                    if first:
                        payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                                   b"<Message>Please reduce your request rate.</Message></Error>")
                        self.send_response(503)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = target.netloc
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
