#!/usr/bin/env python3
"""Stand-in API server for the haproxy scenario: every GET gets 200 and says who served it."""

import http.server
import socket
import sys


def main() -> None:
    port = int(sys.argv[1])
    served_by = f"{socket.gethostname()}:{port}"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = f"{served_by} {self.path}\n".encode()
            self.send_response(200)
            self.send_header("X-Served-By", served_by)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Health checks every second would flood the journal."""

    http.server.ThreadingHTTPServer(("", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
