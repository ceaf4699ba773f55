"""``POST /digitalmatter/oem``: the OEM Server's JSON HTTP connector, landed in Kafka.

Each request is answered only once its outcome is certain:

- **200** after Kafka acknowledged (``acks=all``) every record of the body: its records on
  ``fleetgate.records.v1`` (``source`` ``oem_http`` / ``oem_http_edge``), the body as received
  on ``fleetgate.dmt.oem.raw.v1``, and the device's status on ``fleetgate.devices.v1`` (its
  last known status, :mod:`ingestor.registry`, with what the body adds). The OEM
  Server then tells the device to delete them.
- **400** with ``{"error", "field", "problem"}`` for a body that does not decode (the field
  named as a path, ``Records[2].Fields[0].Lat``); nothing is published.
- **401** when authentication fails (``WWW-Authenticate`` says which scheme); **413** for a
  body over ``max_body_bytes``; nothing is read or published.
- **503** (``Retry-After``) while the ingestor is not ready (Kafka unreachable) or when Kafka
  did not acknowledge within ``publish_timeout_seconds``: the OEM Server keeps the records and
  posts them again. Part of such a body may be in Kafka already; the repeat carries the same
  ``record_id`` for consumers to de-duplicate on.

One structured log line per request (``oem_request``). Decoding is ``dmtproto.oem_json``'s,
the record layout ``contracts.dmt_oem``'s: the intake only moves bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from contracts import Topic
from contracts.dmt import PROTOCOL
from contracts.dmt_oem import oem_device_identity, oem_telemetry_records
from contracts.models import encode
from contracts.records import LastConnection, RawHeader, apply_record
from dmtproto.oem_json import OemBody, OemJsonError, decode_oem_json

from .. import metrics as edge_metrics
from ..registry import DeviceRegistry
from ..settings import IngestorSettings
from ..sink import KafkaFailed, Ledger, Sink
from . import metrics
from .settings import HttpSettings

__all__ = ["PATH", "OemIntake"]

_log = structlog.get_logger("fleetgate.ingestor.oem")

#: Where the OEM Server posts (its connector's URL: ``https://host:port/digitalmatter/oem``).
PATH = "/digitalmatter/oem"
#: Seconds the OEM Server is asked to wait before posting again after a 503.
RETRY_AFTER = 5


class _Answer(Exception):
    """Ends a request early with ``status`` and a JSON body."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(body.get("error", ""))
        self.status = status
        self.body = body
        self.headers = headers or {}


class OemIntake:
    """The HTTP listener and its one handler. ``not_ready`` says why the ingestor is not
    ready (Kafka unreachable...), or None: requests get 503 meanwhile."""

    def __init__(
        self,
        settings: HttpSettings,
        ingestor: IngestorSettings,
        sink: Sink,
        not_ready: Callable[[], str | None] = lambda: None,
        registry: DeviceRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.sink = sink
        self.not_ready = not_ready
        #: The process's device registry (shared with the TCP sessions); without one, a view
        #: of what this intake published only.
        self.registry = registry or DeviceRegistry(ingestor, read=False)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._received = edge_metrics.received_bytes.labels(metrics.PROTOCOL)
        self._records = edge_metrics.records.labels(metrics.PROTOCOL)
        metrics.register()

    def app(self) -> web.Application:
        # aiohttp refuses a larger body itself (413) when the handler reads it.
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_post(PATH, self.handle)
        return app

    async def start(self) -> None:
        settings = self.settings
        runner = web.AppRunner(
            self.app(),
            access_log=None,  # one line per request is ours (oem_request)
            shutdown_timeout=self.ingestor.drain_timeout_seconds,
        )
        await runner.setup()
        tls = settings.ssl_context()
        site = web.TCPSite(runner, settings.host, settings.port or 0, ssl_context=tls, backlog=1024)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        _log.info(
            "listening", protocol=metrics.PROTOCOL, host=settings.host, port=self.port,
            path=PATH, tls=tls is not None, auth=settings.auth,
            max_body_bytes=settings.max_body_bytes,
        )  # fmt: skip

    async def stop(self) -> None:
        """Stop accepting; requests in flight get ``drain_timeout_seconds`` to finish."""
        self._stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # The request ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        request_id = uuid.uuid4().hex
        peer = request.remote or "unknown"
        summary: dict[str, Any] = {"request": request_id, "peer": peer}
        fmt = "none"
        try:
            self._authenticate(request)
            body = await self._read(request)
            summary["bytes"] = len(body)
            try:
                decoded = decode_oem_json(body)
            except OemJsonError as exc:
                raise _Answer(
                    400,
                    {"error": str(exc), "field": exc.field, "problem": exc.problem},
                ) from None
            fmt = decoded.format.value
            summary |= {"format": fmt, "imei": decoded.device.imei}
            summary["records"] = len(decoded.records)
            self._ready()
            await self._publish(decoded, body, request_id, peer)
            status, answer, headers = 200, {"records": len(decoded.records)}, {}
        except _Answer as answer_early:
            status, answer, headers = answer_early.status, answer_early.body, answer_early.headers
            summary["error"] = answer.get("error")
        elapsed = time.monotonic() - started
        metrics.requests.labels(fmt, str(status)).inc()
        metrics.request_seconds.labels(fmt).observe(elapsed)
        log = _log.info if status == 200 else _log.warning
        log("oem_request", status=status, duration_seconds=round(elapsed, 6), **summary)
        return web.json_response(answer, status=status, headers=headers)

    def _authenticate(self, request: web.Request) -> None:
        settings = self.settings
        if settings.auth == "none":
            return
        header = request.headers.get("Authorization", "")
        if settings.auth == "basic":
            ok = _basic_matches(header, settings.username, settings.password.get_secret_value())
            challenge = 'Basic realm="fleetgate"'
        elif settings.auth == "bearer":
            scheme, _, token = header.partition(" ")
            ok = scheme.lower() == "bearer" and _same(token.strip(), settings.token)
            challenge = 'Bearer realm="fleetgate"'
        else:
            given = request.headers.get(settings.header_name)
            ok = given is not None and _same(given, settings.header_value)
            challenge = f'{settings.header_name} realm="fleetgate"'
        if not ok:
            raise _Answer(
                401,
                {"error": f"authentication failed ({settings.auth})"},
                {"WWW-Authenticate": challenge},
            )

    async def _read(self, request: web.Request) -> bytes:
        limit = self.settings.max_body_bytes
        too_large = _Answer(413, {"error": f"body over {limit} bytes (max_body_bytes)"})
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # chunked, no length announced
            raise too_large from None
        self._received.inc(len(body))
        return body

    def _ready(self) -> None:
        why = "ingestor shutting down" if self._stopping else self.not_ready()
        if why is not None:
            raise _Answer(503, {"error": f"not ready: {why}"}, {"Retry-After": str(RETRY_AFTER)})

    async def _publish(self, body: OemBody, raw: bytes, request_id: str, peer: str) -> None:
        """Every record, the raw body and the device's status to Kafka; return once Kafka
        acknowledged them all. 503 when it does not within ``publish_timeout_seconds``."""
        timeout = self.settings.publish_timeout_seconds
        ledger = Ledger(self.sink, timeout, timeout, protocol=metrics.PROTOCOL)
        received_at = datetime.now(UTC)
        instance = self.ingestor.instance
        records = oem_telemetry_records(
            body, session_id=request_id, ingestor=instance, received_at=received_at
        )
        key = body.device.imei.encode()
        headers = [
            (RawHeader.SESSION.value, request_id.encode()),
            (RawHeader.INGESTOR.value, instance.encode()),
            (RawHeader.RECEIVED_AT.value, str(int(received_at.timestamp() * 1000)).encode()),
            (RawHeader.FORMAT.value, body.format.value.encode()),
            (RawHeader.RECORDS.value, str(len(records)).encode()),
        ]
        connection = LastConnection(
            session_id=request_id,
            ingestor=instance,
            protocol=PROTOCOL,
            peer=peer,
            connected_at=received_at,
        )
        registry = self.registry
        status = registry.connected(body.device.imei, connection, oem_device_identity(body.device))
        for record in records:
            status = apply_record(status, record)
        try:
            async with asyncio.timeout(timeout):
                await ledger.publish(Topic.DMT_OEM_RAW, key, raw, headers)
                for record in records:
                    await ledger.publish(Topic.RECORDS, key, encode(record))
                await registry.publish(ledger, status)
                await ledger.barrier()
        except (KafkaFailed, TimeoutError) as exc:
            ledger.abandon()
            reason = str(exc) or f"no acknowledgement within {timeout:g} s"
            raise _Answer(
                503,
                {"error": f"Kafka did not acknowledge the records: {reason}"},
                {"Retry-After": str(RETRY_AFTER)},
            ) from None
        self._records.inc(len(records))


def _same(given: str, expected: Any) -> bool:
    """Constant-time comparison with a secret (``SecretStr``)."""
    # a header aiohttp could not decode keeps its bytes as surrogates: compare those
    given_bytes = given.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given_bytes, expected.get_secret_value().encode())


def _basic_matches(header: str, username: str, password: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    matches = hmac.compare_digest(user.encode(), username.encode())
    return bool(sep) and hmac.compare_digest(secret.encode(), password.encode()) and matches
