#!/usr/bin/env python3
"""An HTTPS webhook receiver for the relay's TLS tests: Python's http.server over
the ssl module (OpenSSL), so that skillbox's TLS client meets a server it was not
built with.

    python3 https_receiver.py CERT KEY LOG

Listens on 127.0.0.1 on a free port and prints that port on stdout (one line);
answers every POST with 200 and appends its path and body to LOG as a JSON line.
Runs until killed.
"""

import http.server
import json
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):  # quiet stderr
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        with open(sys.argv[3], "a") as log:
            log.write(json.dumps({"path": self.path, "body": body}) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def main():
    cert, key = sys.argv[1], sys.argv[2]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
