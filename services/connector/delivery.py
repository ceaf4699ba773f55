"""POSTing webhooks to one endpoint: headers, signatures, auth, TLS, timeouts, limits, SSRF.

What an answer means is decided by :func:`classify` alone: 2xx delivers; no answer, 5xx, 408,
429 and 3xx are worth retrying; every other 4xx is a rejection (dead letter at once). An
endpoint whose host resolves to a private address is refused before anything is sent, unless
its config allows private networks.
"""

from __future__ import annotations

import asyncio
import base64
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

import aiohttp
import aiohttp.abc
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


def _refuse(host: str, addresses: Iterable[str]) -> None:
    for address in addresses:
        why = disallowed_address(address)
        if why is not None:
            raise DestinationRefused(
                f"{host} resolves to {why}; set 'allow_private_network: true' to allow it"
            )


class _GuardedResolver(aiohttp.abc.AbstractResolver):
    """Resolves the host itself and refuses it if any address is private; the connection
    then goes to a checked address (so a second DNS answer cannot sneak a private one in).
    TLS still verifies and sends SNI for the host name: aiohttp does that above this layer.
    An IP address in the URL never reaches a resolver: :meth:`EndpointClient.post` checks
    it."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, family=family
            )
        except OSError as exc:
            raise OSError(exc.errno, f"cannot resolve {host}: {exc}") from exc
        _refuse(host, {str(info[4][0]).split("%")[0] for info in infos})
        return [
            {
                "hostname": host,
                "host": str(info[4][0]).split("%")[0],
                "port": port,
                "family": info[0],
                "proto": info[2],
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
            for info in infos
        ]

    async def close(self) -> None:
        pass


def _tls(endpoint: Endpoint) -> ssl.SSLContext:
    tls = endpoint.tls
    if tls.ca_file is not None:
        context = ssl.create_default_context(cafile=str(tls.ca_file))
    else:
        context = httpx.create_ssl_context(verify=tls.verify)  # certifi's CAs, as before
    if tls.cert_file is not None:
        password = tls.key_password.get_secret_value() if tls.key_password else None
        context.load_cert_chain(str(tls.cert_file), tls.key_file and str(tls.key_file), password)
    return context


def _dynamic(text: str) -> bool:
    return any(field in text for field in DYNAMIC_FIELDS)


def _fill(template: str, values: Mapping[str, str]) -> str:
    for field in DYNAMIC_FIELDS:
        if field in template:
            template = template.replace(field, values.get(field, ""))
    return template


def _authority(url: str) -> str:
    """The ``host[:port]`` part of a URL template (placeholders and all)."""
    rest = url.partition("://")[2]
    return rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]


def _error(exc: BaseException) -> str:
    """What a failed request is called in logs and dead letters."""
    # "ConnectError": the name operators (and the docs) know for "could not connect".
    name = "ConnectError" if isinstance(exc, aiohttp.ClientConnectorError) else type(exc).__name__
    return f"{name}: {exc}" if str(exc) else name


class EndpointClient:
    """One endpoint's HTTP client (connection pool, TLS, auth, limits) and its POST.

    aiohttp, not httpx: its client costs several times less CPU per request, and requests
    per second of one process is what the connector is measured by. No cookies are kept, no
    proxy is taken from the environment, redirects are not followed.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.name = endpoint.name
        headers = {"User-Agent": user_agent()}
        if endpoint.auth is not None and endpoint.auth.basic is not None:
            basic = endpoint.auth.basic
            pair = f"{basic.username}:{basic.password.get_secret_value()}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        elif endpoint.auth is not None and endpoint.auth.bearer is not None:
            headers["Authorization"] = f"Bearer {endpoint.auth.bearer.get_secret_value()}"
        self._templates = {k: v for k, v in endpoint.headers.items() if _dynamic(v)}
        self._url_template = _dynamic(endpoint.url)
        self._url_fields = [f for f in DYNAMIC_FIELDS if f in endpoint.url]
        #: A host given by dynamic fields can be an IP address only known per event.
        self._check_host = not endpoint.allow_private_network and _dynamic(_authority(endpoint.url))
        for name, value in endpoint.headers.items():
            if name not in self._templates:
                headers[name] = value
        self._static_headers = headers
        self._keys = [secret_key(s.get_secret_value()) for s in endpoint.secrets]
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(endpoint.max_concurrency)
        self._limiter = (
            RateLimiter(endpoint.rate_limit_per_second)
            if endpoint.rate_limit_per_second is not None
            else None
        )

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on first use (it belongs to the running event loop)."""
        if self._session is None:
            endpoint = self.endpoint
            connector = aiohttp.TCPConnector(
                limit=endpoint.max_concurrency,
                limit_per_host=endpoint.max_concurrency,
                ssl=_tls(endpoint),
                resolver=None if endpoint.allow_private_network else _GuardedResolver(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._static_headers,
                timeout=aiohttp.ClientTimeout(total=endpoint.timeout_seconds),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # a failure's body is quoted as it came
                trust_env=False,  # no proxy from the environment
            )
        return self._session

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
        if self._templates:
            values = fields if fields is not None else {IMEI_PLACEHOLDER: imei}
            for name, template in self._templates.items():
                headers[name] = _fill(template, values)
        return headers

    def url(self, fields: Mapping[str, str]) -> str:
        """The endpoint's URL with its dynamic fields filled in (percent-encoded)."""
        if not self._url_template:
            return self.endpoint.url
        quoted = {k: urllib.parse.quote(fields.get(k, ""), safe="") for k in self._url_fields}
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
        started = time.perf_counter()
        session = self._client()
        url = self.url(values)
        if self._check_host:
            host = urllib.parse.urlsplit(url).hostname or ""
            try:
                _refuse(host, [host])
            except DestinationRefused as exc:
                return Attempt(Verdict.REFUSED, None, time.perf_counter() - started, str(exc))
        headers = self.headers(event_id, imei, body, fields=values)
        try:  # within the session's total timeout: connection, request and answer
            response = await session.post(url, data=body, headers=headers, allow_redirects=False)
        except DestinationRefused as exc:
            return Attempt(Verdict.REFUSED, None, time.perf_counter() - started, str(exc))
        except TimeoutError:  # asyncio's and aiohttp's own (ServerTimeoutError is one)
            error = f"no answer within {timeout:g} s"
            return Attempt(Verdict.RETRY, None, time.perf_counter() - started, error)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # connection refused, TLS, protocol errors, a URL aiohttp will not send to, ...
            return Attempt(Verdict.RETRY, None, time.perf_counter() - started, _error(exc))
        # The status is the answer. The body is read (within what is left of the timeout)
        # only to reuse the connection, or to quote it in the error of a failure.
        status = response.status
        limit = MAX_BODY_BYTES if 200 <= status < 300 else ERROR_BODY_BYTES
        text = b""
        try:
            # Still within the total timeout; a body cut short changes nothing.
            with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                while len(text) < limit:
                    chunk = await response.content.read(limit - len(text))
                    if not chunk:
                        break
                    text += chunk
        finally:
            response.release()
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
        if self._session is not None:
            await self._session.close()
            self._session = None
