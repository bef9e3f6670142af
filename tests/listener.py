"""A real HTTP listener on 127.0.0.1 that records what is POSTed to it (a webhook receiver)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Listener:
    """``url`` takes POSTs; ``messages`` holds each JSON body; ``status`` is what it answers."""

    def __init__(self, status: int = 200):
        self.status = status
        self.messages: list[dict] = []
        self.attempts = 0
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                listener.attempts += 1
                if listener.status == 200:
                    listener.messages.append(json.loads(body))
                self.send_response(listener.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/s3cr3t-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Listener:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages]
