"""Open COUNT TCP connections that send nothing and wait for the server to close each one.

Run as a separate process by the slowloris test, so that its file descriptors and memory are
not the ingestor's. Prints two JSON lines on stdout: one when every connection is established
(``{"connected": ...}``), one when all are closed or ``--deadline`` passed (``{"closed": ...}``).
Times are seconds since the script started connecting.

    python tests/hostile/idle_clients.py HOST PORT COUNT [--window N] [--deadline S]
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time
from collections import Counter


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--window", type=int, default=512, help="connects in flight at once")
    parser.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < args.count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    sel = selectors.DefaultSelector()
    started = time.monotonic()
    deadline = started + args.deadline
    connecting: dict[socket.socket, float] = {}
    received: dict[socket.socket, bytearray] = {}
    endings: Counter[str] = Counter()
    contents: Counter[str] = Counter()
    close_times: list[float] = []
    failed: Counter[str] = Counter()
    to_open = args.count
    connected = 0
    connected_at = 0.0
    reported = False

    def finish(sock: socket.socket, ending: str) -> None:
        sel.unregister(sock)
        endings[ending] += 1
        contents[received.pop(sock).hex()] += 1
        close_times.append(time.monotonic() - started)
        sock.close()

    while (to_open or connecting or received) and time.monotonic() < deadline:
        while to_open and len(connecting) < args.window:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex((args.host, args.port))
            to_open -= 1
            if err not in (0, errno.EINPROGRESS):
                failed[errno.errorcode.get(err, str(err))] += 1
                sock.close()
                continue
            connecting[sock] = time.monotonic()
            sel.register(sock, selectors.EVENT_WRITE)
        for key, _ in sel.select(timeout=0.05):
            sock = key.fileobj  # type: ignore[assignment]  # only sockets are registered
            if sock in connecting:
                del connecting[sock]
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    failed[errno.errorcode.get(err, str(err))] += 1
                    sel.unregister(sock)
                    sock.close()
                    continue
                connected += 1
                received[sock] = bytearray()
                sel.modify(sock, selectors.EVENT_READ)
                continue
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                finish(sock, "reset")
                continue
            if data:
                received[sock] += data
            else:
                finish(sock, "eof")
        if not reported and not to_open and not connecting:
            connected_at = time.monotonic() - started
            report = {"connected": connected, "failed": dict(failed), "seconds": connected_at}
            print(json.dumps(report), flush=True)
            reported = True
    close_times.sort()
    summary = {
        "closed": len(close_times),
        "still_open": len(received),
        "endings": dict(endings),
        "received": dict(contents),
        "connected_at": connected_at,
        "first_close": close_times[0] if close_times else None,
        "last_close": close_times[-1] if close_times else None,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
