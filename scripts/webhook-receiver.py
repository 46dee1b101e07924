"""A webhook receiver for drills: prints one JSON line per delivery Nachtwacht posts to it.

    python scripts/webhook-receiver.py 18432 > hook.log

Each line: arrival time, the Idempotency-Key header, and the message's kind, subject, title
and recipients. It answers 200, binds 127.0.0.1 only, and keeps nothing else.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
        try:
            message = json.loads(body)
        except ValueError:
            message = {"raw": body.decode(errors="replace")}
        payload = message.get("payload") or {}
        record = {
            "at": time.strftime("%H:%M:%S"),
            "key": self.headers.get("Idempotency-Key"),
            "kind": message.get("kind"),
            "subject": message.get("subject"),
            "title": payload.get("title"),
            "recipients": [r.get("id") for r in payload.get("recipients") or []],
        }
        print(json.dumps(record), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass  # the JSON lines are the log


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
