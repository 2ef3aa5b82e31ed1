#!/usr/bin/env python3
"""A small stand-in calendar service for the client-intake demo: POST /schedule books a
kick-off meeting and answers with the booking. Bookings are deduplicated by the
Idempotency-Key header, as a real scheduling API would. Usage: demo-scheduler.py [PORT]"""
import json
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BOOKINGS = {}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.reply(400, {"error": "body is not JSON"})
        key = self.headers.get("idempotency-key") or str(uuid.uuid4())
        booking = BOOKINGS.setdefault(key, {
            "booking_id": "bk-%d" % (len(BOOKINGS) + 1),
            "title": request.get("title", "meeting"),
            "slot": "next Tuesday 10:00",
            "duration_minutes": request.get("duration_minutes", 30),
        })
        self.reply(201, booking)

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
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8481
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
