"""A local webhook receiver run as its own process, for `hub forward`'s process test:
``python -m tests.cli.hook_server PORT FILE`` appends one JSON line per request (its
path, delivery id header, content type and body) to FILE, synced to disk, before it answers 200."""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hook(BaseHTTPRequestHandler):
    record = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        line = {
            "path": self.path,
            "delivery_id": self.headers.get("x-hub-delivery-id"),
            "content_type": self.headers.get("content-type"),
            "body": body.decode("latin-1"),
        }
        with open(self.record, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    port, Hook.record = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Hook)
    print("listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
