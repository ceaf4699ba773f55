"""``fleetgate webhook-sink``: a tiny HTTP receiver that shows what webhooks arrive.

Each request becomes one JSON line (``received_at``, ``method``, ``path``, ``headers``, and
``body``: the parsed JSON, or the text when it is not JSON) on stdout or appended to
``--out``. Every request is answered ``--status``. For local runs and tests, not production.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any)")
    parser.add_argument("--status", type=int, default=200, help="HTTP status of every answer")
    parser.add_argument(
        "--out", type=Path, default=None, help="append JSON lines to this file instead of stdout"
    )


def make_server(
    host: str, port: int, status: int, emit: Callable[[dict[str, Any]], None]
) -> ThreadingHTTPServer:
    """A server that hands each request to ``emit`` and answers ``status``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as webhook senders pool connections

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            body: Any
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            emit(
                {
                    "received_at": datetime.now(UTC).isoformat(),
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_PUT = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the JSON lines are the log

    return ThreadingHTTPServer((host, port), Handler)


def run(args: argparse.Namespace) -> int:
    lock = threading.Lock()
    out = args.out.open("a", encoding="utf-8") if args.out else sys.stdout

    def emit(request: dict[str, Any]) -> None:
        line = json.dumps(request, separators=(",", ":"), ensure_ascii=False)
        with lock:
            out.write(line + "\n")
            out.flush()

    server = make_server(args.host, args.port, args.status, emit)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
    host, port = server.server_address[:2]
    print(f"webhook-sink listening on http://{host!s}:{port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if out is not sys.stdout:
            out.close()
    return 0
