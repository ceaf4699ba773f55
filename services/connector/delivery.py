"""POSTing webhooks to one endpoint: headers, signatures, auth, TLS, timeouts, limits, SSRF.

What an answer means is decided by :func:`classify` alone: 2xx delivers; no answer, 5xx, 408,
429 and 3xx are worth retrying; every other 4xx is a rejection (dead letter at once). An
endpoint whose host resolves to a private address is refused before anything is sent, unless
its config allows private networks.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpcore
import httpx

from .config import DYNAMIC_FIELDS, Endpoint, disallowed_address
from .protection import RateLimiter
from .signing import secret_key, sign

__all__ = [
    "Attempt",
    "DestinationRefused",
    "EndpointClient",
    "Verdict",
    "classify",
    "retry_after",
    "user_agent",
]

#: Placeholders in the URL and header values, replaced per event (as in Digital Matter's OEM
#: Server): ``[IMEI]``, ``[SERIAL]``, ``[ICCID]``.
IMEI_PLACEHOLDER = "[IMEI]"
#: How much of a failed answer's body goes into logs and dead letters.
ERROR_BODY_BYTES = 200
#: How much of a successful answer's body is read (so the connection can be reused).
MAX_BODY_BYTES = 64 * 1024


def user_agent() -> str:
    try:
        return f"fleetgate/{version('fleetgate')}"
    except PackageNotFoundError:  # a source tree that was never installed
        return "fleetgate/unknown"


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    #: Worth trying again later: no answer, 5xx, 408, 429, 3xx.
    RETRY = "retry"
    #: A 4xx other than 408 and 429: the endpoint will never take it as it is.
    REJECT = "reject"
    #: Not sent: the destination is an address this endpoint may not reach.
    REFUSED = "refused"


def classify(status: int | None) -> Verdict:
    """What an answer means; ``None`` is no answer (timeout, connection or TLS error)."""
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if 400 <= status < 500 and status not in (408, 429):
        return Verdict.REJECT
    return Verdict.RETRY


@dataclass(frozen=True, slots=True)
class Attempt:
    verdict: Verdict
    status: int | None
    seconds: float
    error: str | None = None
    retry_after: float | None = None

    @property
    def alive(self) -> bool | None:
        """For the circuit breaker: did the endpoint show it works (None: nothing learnt)?"""
        if self.verdict is Verdict.REFUSED:
            return None
        return self.verdict is not Verdict.RETRY or self.status == 429


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
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


class DestinationRefused(Exception):
    """The endpoint's host resolves to an address it may not reach (SSRF protection)."""


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses private addresses, then connects to the checked
    address (so a second DNS answer cannot sneak a private one in). TLS still verifies and
    sends SNI for the host name: httpcore does that above this layer."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
        for address in addresses:
            why = disallowed_address(address)
            if why is not None:
                raise DestinationRefused(
                    f"{host} resolves to {why}; set 'allow_private_network: true' to allow it"
                )
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("unix sockets are not webhook destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _tls(endpoint: Endpoint) -> ssl.SSLContext:
    tls = endpoint.tls
    if tls.ca_file is not None:
        context = ssl.create_default_context(cafile=str(tls.ca_file))
    else:
        context = httpx.create_ssl_context(verify=tls.verify)
    if tls.cert_file is not None:
        password = tls.key_password.get_secret_value() if tls.key_password else None
        context.load_cert_chain(str(tls.cert_file), tls.key_file and str(tls.key_file), password)
    return context


def _transport(endpoint: Endpoint) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(
        verify=_tls(endpoint),
        limits=httpx.Limits(
            max_connections=endpoint.max_concurrency,
            max_keepalive_connections=endpoint.max_concurrency,
        ),
    )
    if not endpoint.allow_private_network:
        # httpx has no public hook below name resolution; its pool is httpcore's, whose
        # network backend is a documented httpcore extension point.
        pool: httpcore.AsyncConnectionPool = transport._pool
        pool._network_backend = _GuardedBackend(pool._network_backend)
    return transport


def _dynamic(text: str) -> bool:
    return any(field in text for field in DYNAMIC_FIELDS)


def _fill(template: str, values: Mapping[str, str]) -> str:
    for field in DYNAMIC_FIELDS:
        if field in template:
            template = template.replace(field, values.get(field, ""))
    return template


class EndpointClient:
    """One endpoint's HTTP client (connection pool, TLS, auth, limits) and its POST."""

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
        self._templates = {k: v for k, v in endpoint.headers.items() if _dynamic(v)}
        self._url_template = _dynamic(endpoint.url)
        for name, value in endpoint.headers.items():
            if name not in self._templates:
                headers[name] = value
        self._keys = [secret_key(s.get_secret_value()) for s in endpoint.secrets]
        self._client = httpx.AsyncClient(
            auth=auth,
            headers=headers,
            timeout=httpx.Timeout(endpoint.timeout_seconds),
            follow_redirects=False,  # a 3xx is a failure, as in Standard Webhooks
            transport=transport or _transport(endpoint),  # explicit: no proxy from the env
        )
        self._slots = asyncio.Semaphore(endpoint.max_concurrency)
        self._limiter = (
            RateLimiter(endpoint.rate_limit_per_second)
            if endpoint.rate_limit_per_second is not None
            else None
        )

    def headers(
        self,
        event_id: str,
        imei: str,
        body: bytes = b"",
        timestamp: int | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """Per-attempt headers (the client adds the static ones). ``fields``: the dynamic
        fields' values (default: only ``[IMEI]``, ``imei``)."""
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(stamp),
        }
        if self._keys:
            headers["webhook-signature"] = sign(self._keys, event_id, stamp, body)
        values = fields if fields is not None else {IMEI_PLACEHOLDER: imei}
        for name, template in self._templates.items():
            headers[name] = _fill(template, values)
        return headers

    def url(self, fields: Mapping[str, str]) -> str:
        """The endpoint's URL with its dynamic fields filled in (percent-encoded)."""
        if not self._url_template:
            return self.endpoint.url
        quoted = {k: urllib.parse.quote(v, safe="") for k, v in fields.items()}
        return _fill(self.endpoint.url, quoted)

    async def post(
        self, body: bytes, event_id: str, imei: str, fields: Mapping[str, str] | None = None
    ) -> Attempt:
        """One POST, within the endpoint's concurrency and rate limits; never raises (except
        on cancellation). ``seconds`` is the request alone, not the wait for a slot."""
        async with self._slots:
            if self._limiter is not None:
                await self._limiter.acquire()
            return await self._post(body, event_id, imei, fields)

    async def _post(
        self, body: bytes, event_id: str, imei: str, fields: Mapping[str, str] | None
    ) -> Attempt:
        values = fields if fields is not None else {IMEI_PLACEHOLDER: imei}
        timeout = self.endpoint.timeout_seconds
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                headers = self.headers(event_id, imei, body, fields=values)
                request = self._client.build_request(
                    "POST", self.url(values), content=body, headers=headers
                )
                response = await self._client.send(request, stream=True)
        except DestinationRefused as exc:
            return Attempt(Verdict.REFUSED, None, time.perf_counter() - started, str(exc))
        except TimeoutError:
            error = f"no answer within {timeout:g} s"
            return Attempt(Verdict.RETRY, None, time.perf_counter() - started, error)
        except httpx.TimeoutException as exc:
            error = f"{type(exc).__name__}: no answer within {timeout:g} s"
            return Attempt(Verdict.RETRY, None, time.perf_counter() - started, error)
        except Exception as exc:  # connection refused, TLS, protocol errors, ...
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return Attempt(Verdict.RETRY, None, time.perf_counter() - started, error)
        # The status is the answer. The body is read (within what is left of the timeout)
        # only to reuse the connection, or to quote it in the error of a failure.
        status = response.status_code
        limit = MAX_BODY_BYTES if 200 <= status < 300 else ERROR_BODY_BYTES
        text = b""
        try:
            if response.is_stream_consumed:  # an answer that was read already (mock transports)
                text = response.content[:limit]
            else:
                with contextlib.suppress(Exception):  # a body cut short changes nothing
                    async with asyncio.timeout_at(deadline):
                        async for chunk in response.aiter_raw():
                            text += chunk
                            if len(text) >= limit:
                                break
        finally:
            await response.aclose()
        seconds = time.perf_counter() - started
        verdict = classify(status)
        if verdict is Verdict.DELIVERED:
            return Attempt(verdict, status, seconds)
        snippet = text[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
        return Attempt(
            verdict,
            status,
            seconds,
            f"HTTP {status}" + (f": {snippet}" if snippet else ""),
            retry_after(response.headers.get("retry-after")),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
