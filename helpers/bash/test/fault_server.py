#!/usr/bin/python3
"""A scriptable HTTP server for the bash helper's tests (127.0.0.1 only).

Usage: fault_server.py PORTFILE [PORT]
Binds 127.0.0.1 on PORT (default: a free port), writes the port to PORTFILE, and serves until
killed.

Every request outside /_fault/ is logged and answered with the next scripted response, or with
{"success":true} once the script is used up. Control endpoints:
  POST /_fault/script  body: a JSON list of responses, appended to the script. Each response:
        {"status": 503, "json": {...}  | "text": "raw body", "headers": {"Retry-After": "1"},
         "delay": 2.5 (seconds before answering), "close": true (drop the connection, no answer)}
  POST /_fault/reset   clears the script and the log
  GET  /_fault/log     the logged requests: [{"method","path","headers":{lower-case name: value},
                       "body": text, "t": seconds since the server started}]
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
SCRIPT = []
LOG = []
START = time.monotonic()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output clean
        pass

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status, body=b"", headers=None, content_type="application/json"):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _control(self, body):
        if self.path == "/_fault/reset" and self.command == "POST":
            with LOCK:
                SCRIPT.clear()
                LOG.clear()
            return self._send(200, b'{"ok":true}')
        if self.path == "/_fault/script" and self.command == "POST":
            with LOCK:
                SCRIPT.extend(json.loads(body))
            return self._send(200, b'{"ok":true}')
        if self.path == "/_fault/log" and self.command == "GET":
            with LOCK:
                data = json.dumps(LOG).encode()
            return self._send(200, data)
        return self._send(404, b'{"error":"unknown control endpoint"}')

    def _handle(self):
        body = self._read_body()
        if self.path.startswith("/_fault/"):
            return self._control(body)
        with LOCK:
            LOG.append({
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
                "t": time.monotonic() - START,
            })
            step = SCRIPT.pop(0) if SCRIPT else {}
        if step.get("delay"):
            time.sleep(float(step["delay"]))
        if step.get("close"):
            self.close_connection = True
            return
        if "text" in step:
            payload, ctype = step["text"].encode(), "text/plain"
        else:
            payload = json.dumps(step.get("json", {"success": True})).encode()
            ctype = "application/json"
        try:
            self._send(int(step.get("status", 200)), payload, step.get("headers"), ctype)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # broken connections are part of the tests


def main():
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = Server(("127.0.0.1", port), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    # Renamed into place, so a reader never sees a half-written port.
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
