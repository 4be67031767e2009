"""A loopback HTTP server for download tests: serves files with Range support, and can cut a
response short or answer 404, so the real downloader meets resumes and failures."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    """Serves ``routes`` (url path -> file) on 127.0.0.1; records each request's path and Range.

    ``cut_after`` (url path -> bytes) makes the next response on that path stop after so many
    bytes while announcing the full length, as a dropped connection does. ``html`` (url paths)
    answer every request with a 200 web page, ``ignore_range`` (url paths) with the whole file and
    status 200, and ``chunked_cut`` (url path -> bytes) sends the next response chunked and stops
    after so many bytes (the client then raises ``http.client.IncompleteRead``).
    """

    def __init__(self, routes: dict[str, Path]):
        self.routes = routes
        self.cut_after: dict[str, int] = {}
        self.html: set[str] = set()
        self.ignore_range: set[str] = set()
        self.chunked_cut: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                path = self.path
                server.requests.append((path, self.headers.get("Range")))
                if path in server.html:
                    page = b"<html><body>This page has moved.</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return
                if path not in server.routes:
                    self.send_error(404)
                    return
                data = Path(server.routes[path]).read_bytes()
                start, status = 0, 200
                if path in server.chunked_cut:
                    cut = server.chunked_cut.pop(path)
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if self.headers.get("Range") and path not in server.ignore_range:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = server.cut_after.pop(path, None)
                self.wfile.write(body if cut is None else body[:cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
