#!/usr/bin/env python3
"""Small local stand-ins for the outside systems the shipped templates talk to, for the demos
(scripts/demo-template): a reports service (GET /reports, PUT /reports/ID) and an order
system (POST /v1/orders). Everything it receives is printed, so the demo shows what was sent.
It is not a real service: state lives in memory. Usage: demo-services.py [PORT]"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DAY = 86_400_000
NOW = int(time.time() * 1000)
REPORTS = {
    "r1": {"id": "r1", "title": "Q1 market outlook", "updated_at": NOW - 200 * DAY,
           "body": "Demand for warehouse space rose in the first quarter; rents held steady."},
    "r2": {"id": "r2", "title": "Client onboarding checklist", "updated_at": NOW - 5 * DAY,
           "body": "Identity checks, conflicts search, engagement letter, billing set-up."},
    "r3": {"id": "r3", "title": "Sanctions overview", "updated_at": NOW - 120 * DAY,
           "body": "The sanctions lists changed twice last year; screening is monthly."},
}
ORDERS = []


class Handler(BaseHTTPRequestHandler):
    def body(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) or b"{}"
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def do_GET(self):
        if self.path.split("?")[0] == "/reports":
            return self.reply(200, {"reports": list(REPORTS.values())})
        self.reply(404, {"error": "not found"})

    def do_PUT(self):
        rid = self.path.rsplit("/", 1)[-1]
        if not self.path.startswith("/reports/") or rid not in REPORTS:
            return self.reply(404, {"error": "no such report"})
        data = self.body() or {}
        REPORTS[rid].update(title=data.get("title", REPORTS[rid]["title"]), body=data.get("body", ""), updated_at=int(time.time() * 1000))
        print(f"demo-services: published report {rid} ({data.get('title')}), approved by {data.get('approved_by')}", flush=True)
        self.reply(200, {"saved": rid})

    def do_POST(self):
        if self.path.split("?")[0] != "/v1/orders":
            return self.reply(404, {"error": "not found"})
        data = self.body()
        if not isinstance(data, dict):
            return self.reply(400, {"error": "body is not JSON"})
        ORDERS.append(data)
        print(f"demo-services: order {data.get('external_id')} for {data.get('customer_name')}: {data.get('total_minor')} minor units", flush=True)
        self.reply(201, {"id": f"erp-{len(ORDERS)}", "external_id": data.get("external_id")})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8484
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
