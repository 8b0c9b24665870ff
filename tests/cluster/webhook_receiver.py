"""Alertmanager's webhook target in the lab: appends every notification to a JSON-lines file.

Runs inside the monitoring host (copied there by the tests), on the loopback address that the
lab's alertmanager_webhook_url names. Standard library only.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = sys.argv[2] if len(sys.argv) > 2 else "/tmp/alerts.jsonl"


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with open(OUT, "a", encoding="utf-8") as out:
            out.write(json.dumps(json.loads(body)) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9095
    ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
