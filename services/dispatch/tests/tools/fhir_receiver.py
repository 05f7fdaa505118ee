#!/usr/bin/env python3
"""A FHIR server's front door for the tests (no FHIR server can be installed
here): records every POSTed body with its Authorization header in OUT_DIR and
answers by the path: /ok -> 200 with a transaction-response Bundle, /busy ->
503, /invalid -> 422 with an OperationOutcome. Prints "listening PORT"."""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT_DIR = sys.argv[1]
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with LOCK:
            count = len(os.listdir(OUT_DIR))
            with open(os.path.join(OUT_DIR, f"{count:04d}.json"), "w") as kept:
                json.dump({
                    "path": self.path,
                    "authorization": self.headers.get("Authorization", ""),
                    "content_type": self.headers.get("Content-Type", ""),
                    "body": json.loads(body),
                }, kept)
        if self.path.rstrip("/").endswith("/ok"):
            answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
            self.reply(200, answer)
        elif self.path.rstrip("/").endswith("/busy"):
            self.reply(503, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "transient", "diagnostics": "server busy"}]})
        else:
            self.reply(422, {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invariant", "diagnostics": "DiagnosticReport.code is not allowed here"}]})

    def reply(self, status, document):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
