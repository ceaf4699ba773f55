"""POSTing webhooks to one endpoint: headers, auth, TLS, timeouts, and retrying until 2xx.

What a response means is decided by :func:`classify` alone, so that the dead-letter work can
turn "retry" into "reject" for permanent errors without touching the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version

import httpx
import structlog

from . import metrics
from .config import Endpoint

__all__ = [
    "Attempt",
    "EndpointClient",
    "RetryPolicy",
    "Verdict",
    "classify",
    "deliver",
    "user_agent",
]

_log = structlog.get_logger("fleetgate.connector")

#: Placeholders in header values, replaced per event (as in Digital Matter's OEM Server).
IMEI_PLACEHOLDER = "[IMEI]"


def user_agent() -> str:
    try:
        return f"fleetgate/{version('fleetgate')}"
    except PackageNotFoundError:  # a source tree that was never installed
        return "fleetgate/unknown"


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    # REJECT (permanent failure -> dead letter) arrives with the dead-letter topic.


def classify(status: int | None) -> Verdict:
    """What an answer means; ``None`` is no answer (timeout, connection or TLS error).

    Only 2xx delivers. Everything else is retried for now, 4xx included: once failed events
    have a dead-letter topic, 4xx other than 408 and 429 become permanent rejections here.
    """
    if status is not None and 200 <= status < 300:
        return Verdict.DELIVERED
    return Verdict.RETRY


@dataclass(frozen=True, slots=True)
class Attempt:
    verdict: Verdict
    status: int | None
    seconds: float
    error: str | None = None
    retry_after: float | None = None


def _retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _tls(endpoint: Endpoint) -> ssl.SSLContext | bool:
    if not endpoint.tls.verify:
        return False
    if endpoint.tls.ca_file is not None:
        return ssl.create_default_context(cafile=str(endpoint.tls.ca_file))
    return True


class EndpointClient:
    """One endpoint's HTTP client (connection pool, TLS, auth) and its POST."""

    def __init__(self, endpoint: Endpoint, transport: httpx.AsyncBaseTransport | None = None):
        self.endpoint = endpoint
        self.name = endpoint.name
        auth: httpx.Auth | None = None
        headers = httpx.Headers({"User-Agent": user_agent()})
        if endpoint.auth is not None and endpoint.auth.basic is not None:
            basic = endpoint.auth.basic
            auth = httpx.BasicAuth(basic.username, basic.password.get_secret_value())
        elif endpoint.auth is not None and endpoint.auth.bearer is not None:
            headers["Authorization"] = f"Bearer {endpoint.auth.bearer.get_secret_value()}"
        self._templates = {k: v for k, v in endpoint.headers.items() if IMEI_PLACEHOLDER in v}
        for name, value in endpoint.headers.items():
            if name not in self._templates:
                headers[name] = value
        self._client = httpx.AsyncClient(
            auth=auth,
            headers=headers,
            verify=_tls(endpoint),
            timeout=httpx.Timeout(endpoint.timeout_seconds),
            follow_redirects=False,  # a 3xx is a failure, as in Standard Webhooks
            transport=transport,
        )

    def headers(self, event_id: str, imei: str) -> dict[str, str]:
        """Per-event headers (the client adds the static ones)."""
        headers = {"Content-Type": "application/json", "webhook-id": event_id}
        for name, template in self._templates.items():
            headers[name] = template.replace(IMEI_PLACEHOLDER, imei)
        return headers

    async def post(self, body: bytes, event_id: str, imei: str) -> Attempt:
        """One POST; never raises (except on cancellation)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.endpoint.timeout_seconds):
                response = await self._client.post(
                    self.endpoint.url, content=body, headers=self.headers(event_id, imei)
                )
        except TimeoutError:
            error = f"no answer within {self.endpoint.timeout_seconds:g} s"
            return Attempt(Verdict.RETRY, None, time.perf_counter() - started, error)
        except httpx.TimeoutException as exc:
            error = f"{type(exc).__name__}: no answer within {self.endpoint.timeout_seconds:g} s"
            return Attempt(Verdict.RETRY, None, time.perf_counter() - started, error)
        except Exception as exc:  # connection refused, TLS, protocol errors, ...
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Attempt(Verdict.RETRY, None, time.perf_counter() - started, error)
        seconds = time.perf_counter() - started
        verdict = classify(response.status_code)
        if verdict is Verdict.DELIVERED:
            return Attempt(verdict, response.status_code, seconds)
        text = response.text[:200].strip()
        return Attempt(
            verdict,
            response.status_code,
            seconds,
            f"HTTP {response.status_code}" + (f": {text}" if text else ""),
            _retry_after(response.headers.get("retry-after")),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: ``initial`` doubling up to ``maximum`` seconds."""

    initial: float = 1.0
    maximum: float = 60.0

    def delay(
        self,
        failures: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...).

        "Equal jitter": a uniform draw from the upper half of the exponential step, so
        replicas retrying the same endpoint spread out but never retry sooner than half the
        step. A ``Retry-After`` asks for more, never for more than ``maximum``.
        """
        step = min(self.maximum, self.initial * 2.0 ** min(failures - 1, 64))
        delay = step / 2 + rand() * step / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.maximum))
        return delay


async def deliver(
    client: EndpointClient,
    *,
    event_id: str,
    event_type: str,
    imei: str,
    body: Callable[[], bytes],
    policy: RetryPolicy,
    stop: asyncio.Event,
) -> bool:
    """POST ``body()`` (rebuilt per attempt) until the endpoint answers 2xx.

    Returns True once delivered, False if ``stop`` was set first. It never gives up on its
    own: the event stays the endpoint's next one until it is delivered.
    """
    name = client.name
    failures = 0
    while not stop.is_set():
        if failures:
            metrics.retries.labels(name).inc()
        attempt = await client.post(body(), event_id, imei)
        metrics.delivery_seconds.labels(name).observe(attempt.seconds)
        fields = {
            "endpoint": name,
            "event_id": event_id,
            "event_type": event_type,
            "imei": imei,
            "attempt": failures + 1,
            "status": attempt.status,
            "duration_ms": round(attempt.seconds * 1000, 1),
        }
        if attempt.verdict is Verdict.DELIVERED:
            metrics.deliveries.labels(name, "success").inc()
            metrics.last_success.labels(name).set(time.time())
            _log.info("delivered", **fields)
            return True
        failures += 1
        metrics.deliveries.labels(name, "failure").inc()
        delay = policy.delay(failures, attempt.retry_after)
        _log.warning("delivery_failed", **fields, error=attempt.error, retry_in=round(delay, 2))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    return False
