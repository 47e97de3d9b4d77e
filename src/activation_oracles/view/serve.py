"""Serving one page on localhost (the standard library's http.server), for `ao view --serve`."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATHS = ("/", "/index.html", "/view.html")


class PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, html: str, host: str, port: int):
        body = html.encode("utf-8")

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] not in PATHS:
                    self.send_error(404, "only the view is served here: open /")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the terminal for the URL
                pass

        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def serve_page(html: str, *, host: str = "127.0.0.1", port: int = 0) -> PageServer:
    """Start serving `html` in a background thread (port 0: a free one); `server.url` is its address,
    `server.shutdown(); server.server_close()` stops it."""
    server = PageServer(html, host, port)
    threading.Thread(target=server.serve_forever, name="ao-view", daemon=True).start()
    return server


def serve_until_stopped(server: PageServer, seconds: float | None = None) -> None:
    """Block until Ctrl-C or, when given, `seconds` have passed; then stop the server."""
    try:
        if seconds is None:
            while True:
                time.sleep(3600)
        else:
            time.sleep(max(0.0, seconds))
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
