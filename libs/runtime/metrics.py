"""The HTTP server of a service: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (ready).

One small server per process, in a daemon thread, so it answers even while the event loop is
busy. Readiness is a set of named checks the service registers (:class:`Readiness`): callables
that return ``None`` when all is well or a short reason when not ("kafka: ... unreachable"),
e.g. :func:`kafka_check`, a metadata request to the brokers.
The service's event loop runs :meth:`Readiness.watch`, which evaluates them every few seconds,
logs each change, and ticks a heartbeat: ``/healthz`` turns 503 when that heartbeat stalls
(the loop is wedged), so the kubelet restarts the container. ``/readyz`` reports the last
evaluation, so a probe never waits on a slow dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from prometheus_client import REGISTRY, Gauge, make_wsgi_app

__all__ = ["Check", "Readiness", "kafka_check", "start_metrics_server"]

_log = structlog.get_logger("fleetgate.health")

#: A readiness check: ``None`` when ready, else why not (one short line).
Check = Callable[[], "str | None"]

ready_gauge = Gauge("fleetgate_ready", "1 while the service is ready (/readyz 200), else 0")


class Readiness:
    """Named readiness checks plus conditions the service sets itself (starting, stopping).

    Thread-safe: the HTTP thread reads, the event loop (or a test) evaluates.
    """

    def __init__(self, service: str, *, interval: float = 2.0, stall_seconds: float = 60.0) -> None:
        self.service = service
        self.interval = interval
        self.stall_seconds = stall_seconds
        self._checks: dict[str, Check] = {}
        #: Conditions set by the service: name -> reason; "starting" until :meth:`started`.
        self._conditions: dict[str, str] = {"starting": "starting"}
        self._failing: dict[str, str] = {}
        self._evaluated = False
        self._heartbeat: float | None = None
        self._lock = threading.Lock()
        self._logged: tuple[tuple[str, str], ...] | None = None
        ready_gauge.set_function(lambda: 1.0 if self.ready else 0.0)

    def add(self, name: str, check: Check) -> None:
        """Register ``check``; it runs in a worker thread, so it may block briefly."""
        self._checks[name] = check

    def started(self) -> None:
        """The service has finished starting (listening, group joined...)."""
        self.clear("starting")

    def hold(self, name: str, reason: str) -> None:
        """Not ready for ``reason`` until :meth:`clear` (e.g. "stopping" on SIGTERM)."""
        with self._lock:
            self._conditions[name] = reason
        self._log_change()

    def clear(self, name: str) -> None:
        with self._lock:
            self._conditions.pop(name, None)
        self._log_change()

    def evaluate(self) -> dict[str, str]:
        """Run every check now (blocking); return what is failing, by name."""
        failing: dict[str, str] = {}
        for name, check in list(self._checks.items()):
            try:
                reason = check()
            except Exception as exc:  # a bug in a check: it fails (logged), the server lives
                _log.exception("readiness_check_failed", check=name)
                reason = f"check raised {exc!r}"
            if reason is not None:
                failing[name] = reason
        with self._lock:
            self._failing = failing
            self._evaluated = True
        self._log_change()
        return failing

    def reasons(self) -> dict[str, str]:
        """Why the service is not ready, by check or condition; empty when ready."""
        with self._lock:
            reasons = dict(self._conditions)
            reasons.update(self._failing)
            if self._checks and not self._evaluated:
                reasons.setdefault("checks", "not evaluated yet")
        return reasons

    @property
    def ready(self) -> bool:
        return not self.reasons()

    def why_not(self) -> str | None:
        """One line saying why the service is not ready, or None when it is."""
        reasons = self.reasons()
        return "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items())) or None

    def beat(self, now: float | None = None) -> None:
        self._heartbeat = time.monotonic() if now is None else now

    def alive(self, now: float | None = None) -> bool:
        """False once :meth:`watch` has run and its heartbeat is older than ``stall_seconds``."""
        if self._heartbeat is None:
            return True
        now = time.monotonic() if now is None else now
        return now - self._heartbeat <= self.stall_seconds

    async def watch(self, stop: asyncio.Event | None = None) -> None:
        """Evaluate the checks every ``interval`` seconds until cancelled or ``stop`` is set."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            self.beat()
            await asyncio.to_thread(self.evaluate)
            self.beat()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    def _log_change(self) -> None:
        state = tuple(sorted(self.reasons().items()))
        with self._lock:
            if state == self._logged:
                return
            first = self._logged is None
            self._logged = state
        if state:
            if not (first and dict(state).keys() <= {"starting", "checks"}):
                _log.warning("not_ready", service=self.service, reasons=dict(state))
        elif not first:
            _log.info("ready", service=self.service)


def kafka_check(client: Mapping[str, Any], timeout: float = 3.0) -> Check:
    """A check that passes when a broker of the bootstrap list answers a Kafka metadata request.

    ``client`` holds the service's aiokafka client arguments (:func:`runtime.kafka.client_kwargs`):
    the probe connects as the service's clients do (TLS, SASL), exchanges ApiVersions, then asks
    for the cluster's brokers (no topics). A port that accepts connections but is not Kafka (a
    wrong address, a proxy with no broker behind it) fails, as does a broker refusing the
    credentials. Each call opens and closes one short-lived connection on its own event loop, so
    it runs where :class:`Readiness` runs checks (a worker thread), never on the service's loop.
    """
    bootstrap = str(client.get("bootstrap_servers", ""))
    targets = [a.strip() for a in bootstrap.split(",") if a.strip()]
    options = {key: client[key] for key in _CONNECTION_OPTIONS if key in client}

    async def probe(target: str) -> None:
        host, _, port = target.rpartition(":")
        conn = await create_conn(
            host.strip("[]"),
            int(port),
            client_id="fleetgate-readiness",
            request_timeout_ms=int(timeout * 1000),
            **options,
        )
        try:
            await conn.send(MetadataRequest([]))
        finally:
            conn.close()

    async def first_answer() -> str | None:
        errors = []
        for target in targets:
            try:
                await asyncio.wait_for(probe(target), timeout)
                return None
            except TimeoutError:
                errors.append(f"{target}: no Kafka answer within {timeout:g} s")
            except (KafkaError, OSError, ValueError) as exc:
                text, name = str(exc), type(exc).__name__
                errors.append(f"{target} {text if text.startswith(name) else f'{name}: {text}'}")
        return f"Kafka unreachable ({'; '.join(errors) or 'no address'})"

    def check() -> str | None:
        return asyncio.run(first_answer())

    return check


#: What :func:`kafka_check` takes from the client arguments to connect as the service does.
_CONNECTION_OPTIONS = (
    "security_protocol",
    "ssl_context",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


def _app(readiness: Readiness | None) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/livez"):
            ok = readiness is None or readiness.alive()
            return _json(start_response, ok, {"status": "ok" if ok else "event loop stalled"})
        if path == "/readyz":
            reasons = {} if readiness is None else readiness.reasons()
            status = "ready" if not reasons else "not ready"
            return _json(start_response, not reasons, {"status": status, "reasons": reasons})
        result: Iterable[bytes] = metrics(environ, start_response)
        return result

    return app


def _json(start_response: Callable[..., Any], ok: bool, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, sort_keys=True).encode() + b"\n"
    status = "200 OK" if ok else "503 Service Unavailable"
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def start_metrics_server(host: str, port: int, readiness: Readiness | None = None) -> int | None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` from a daemon thread.

    Returns the bound port (``port`` may be any free one when tests pass a fixed port), or
    None when ``port`` is 0 (the server is off). Without ``readiness`` the service is always
    ready.
    """
    if port == 0:
        return None
    server = make_server(host, port, _app(readiness), _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    bound: int = server.server_address[1]
    return bound
