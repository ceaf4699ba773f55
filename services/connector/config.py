"""The YAML file of webhook endpoints.

.. code-block:: yaml

    retry:                             # for every endpoint (the retry topics are shared)
      schedule: [5s, 30s, 2m, 10m, 30m, 1h]   # the last step repeats until max_age
      max_age: 24h                     # then the event goes to the dead-letter topic
      jitter: 0.2                      # each wait is the step +- 20 %
    endpoints:
      - name: crm                      # unique, [a-z0-9_-]; the consumer group is {prefix}-crm
        url: https://hooks.example.com/fleetgate
        secrets: [whsec_...]           # Standard Webhooks signing keys (several: rotation)
        auth:
          bearer: ${CRM_TOKEN}         # or  basic: {username: u, password: ${CRM_PASSWORD}}
        headers:
          X-Device: "[IMEI]"           # [IMEI], [SERIAL], [ICCID]: the device's (also in url)
        format: fleetgate              # or oem: records in the OEM Server's JSON (records only)
        batch: {max_records: 20, max_wait_seconds: 5}   # format oem: records of one device per POST
        tls: {verify: true, ca_file: /etc/ssl/private-ca.pem, cert_file: c.pem, key_file: k.pem}
        filter: {types: [file.stored], imeis: [...], cameras: [dualcam], media: [photo]}
        timeout_seconds: 10
        max_concurrency: 10
        rate_limit_per_second: 50
        circuit_breaker: {failures: 5, open_seconds: 30}
        allow_private_network: false
        enabled: true
      - name: tg                       # raw TCP forwarding of Digital Matter records
        url: tcp://dmt.example.com:5000  # needs format: dmt; HTTP options are refused
        format: dmt

``${NAME}`` anywhere in a string value is replaced by the environment variable ``NAME`` when the
file is loaded (``$${NAME}`` stays a literal ``${NAME}``); an unset variable is an error.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import os
import re
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from contracts import DEFAULT_RETRY_SCHEDULE, retry_topic
from contracts.models import Camera, Media

__all__ = [
    "DYNAMIC_FIELDS",
    "RESERVED_HEADERS",
    "Auth",
    "BasicAuth",
    "Batch",
    "CircuitBreakerConfig",
    "ConfigError",
    "ConnectorConfig",
    "Endpoint",
    "Filter",
    "RetryConfig",
    "Tls",
    "disallowed_address",
    "load_config",
    "parse_config",
    "parse_duration",
]

#: Headers the connector sets itself; an endpoint may not configure them.
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "transfer-encoding",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)

#: The OEM connector's dynamic fields, replaced per event in the URL and header values.
DYNAMIC_FIELDS = ("[IMEI]", "[SERIAL]", "[ICCID]")

_ENV_REF = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(ValueError):
    """The endpoint configuration is unusable; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BasicAuth(_Strict):
    username: str
    password: SecretStr


class Auth(_Strict):
    """Exactly one of ``basic`` or ``bearer``."""

    basic: BasicAuth | None = None
    bearer: SecretStr | None = None

    @model_validator(mode="after")
    def _one(self) -> Auth:
        if (self.basic is None) == (self.bearer is None):
            raise ValueError("give exactly one of 'basic' or 'bearer'")
        return self


def _relative_to_config(value: Path | None, info: ValidationInfo) -> Path | None:
    base = (info.context or {}).get("base")
    if value is not None and base is not None and not value.is_absolute():
        return Path(base) / value
    return value


class Tls(_Strict):
    verify: bool = True
    ca_file: Path | None = Field(
        None, description="PEM bundle trusted instead of the system's; relative to the file"
    )
    cert_file: Path | None = Field(
        None, description="client certificate (PEM) for mutual TLS; may hold the key too"
    )
    key_file: Path | None = Field(None, description="the client certificate's private key (PEM)")
    key_password: SecretStr | None = None

    _relative = field_validator("ca_file", "cert_file", "key_file")(_relative_to_config)

    @model_validator(mode="after")
    def _files(self) -> Tls:
        if self.ca_file is not None and not self.verify:
            raise ValueError("'ca_file' has no effect with 'verify: false'")
        if self.cert_file is None and (self.key_file is not None or self.key_password):
            raise ValueError("'key_file' and 'key_password' need 'cert_file'")
        for name in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {str(path)!r} is not a readable file")
        if self.cert_file is not None:  # a wrong key or password shows now, not per request
            password = self.key_password.get_secret_value() if self.key_password else None
            try:
                ssl.create_default_context().load_cert_chain(
                    self.cert_file, self.key_file, password
                )
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"cannot use the client certificate: {exc}") from None
        return self


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``200ms``, ``5s``, ``2m``, ``1h``, ``3d``."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
        if match is None:
            raise ValueError(f"not a duration: {value!r} (use e.g. 500ms, 5s, 2m, 1h, 1d)")
        number, unit = match.groups()
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit or "s"]
        seconds = float(number) * scale
    else:
        raise ValueError(f"not a duration: {value!r}")
    if seconds <= 0:
        raise ValueError(f"a duration must be positive: {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class RetryConfig(_Strict):
    """When a failed event is tried again; one schedule for all endpoints (shared topics)."""

    schedule: list[Duration] = Field(
        default_factory=lambda: [float(d) for d in DEFAULT_RETRY_SCHEDULE],
        min_length=1,
        max_length=20,
        description="wait before each retry after a failure; the last step repeats",
    )
    max_age: Duration = Field(
        86400.0, description="from the first attempt; an event still failing goes to dead letters"
    )
    jitter: float = Field(0.2, ge=0, lt=1, description="each wait is the step times 1 +- jitter")

    @field_validator("schedule")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        for delay in value:
            retry_topic(delay)  # a whole number of milliseconds, else ValueError
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("the steps must grow (each one is a topic: no repeats)")
        return value

    @model_validator(mode="after")
    def _age(self) -> RetryConfig:
        if self.max_age < self.schedule[0]:
            raise ValueError("max_age is shorter than the first retry step")
        return self

    @property
    def topics(self) -> list[str]:
        return [retry_topic(delay) for delay in self.schedule]


class Filter(_Strict):
    """Which events an endpoint gets; an absent list means all. Each given list must match."""

    types: list[Literal["file.stored", "file.failed", "record"]] | None = Field(None, min_length=1)
    imeis: list[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")]] | None = Field(
        None, min_length=1
    )
    cameras: list[Camera] | None = Field(None, min_length=1)
    media: list[Media] | None = Field(None, min_length=1)

    @field_validator("imeis", mode="before")
    @classmethod
    def _imeis_as_text(cls, value: Any) -> Any:
        # An unquoted IMEI in YAML is a number (and would lose a leading zero): say so.
        if isinstance(value, list) and any(isinstance(v, int) for v in value):
            raise ValueError("quote the IMEIs ('012896001234567'): YAML reads them as numbers")
        return value


class CircuitBreakerConfig(_Strict):
    failures: int = Field(
        5, ge=0, description="consecutive failed attempts that open it; 0 turns it off"
    )
    open_seconds: Duration = Field(
        30.0, description="how long it stays open before one event probes the endpoint"
    )


_SECRET_PREFIX = "whsec_"
_SECRET_FORMAT = "a signing secret is 'whsec_' followed by base64 (24 to 64 bytes)"


def _secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text.startswith(_SECRET_PREFIX):
        raise ValueError(_SECRET_FORMAT)
    try:
        key = base64.b64decode(text.removeprefix(_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "a signing secret is 'whsec_' followed by base64 (24 to 64 bytes)"
        ) from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"a signing secret must hold 24 to 64 bytes, this one has {len(key)}")
    return value


Secret = Annotated[SecretStr, AfterValidator(_secret)]


def disallowed_address(host: str) -> str | None:
    """Why ``host`` (an IP address) may not be a webhook destination; None when it may.

    Private, loopback, link-local (cloud metadata at 169.254.169.254), multicast,
    unspecified, reserved and shared (CGNAT) addresses are refused: a webhook URL must not
    reach into the network the connector runs in (SSRF). Not an IP address: None.
    """
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"{ip} is a {kind.replace('_', '-')} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,100}$")]


class Batch(_Strict):
    """Several records of one device in one POST, as the OEM Server posts them."""

    max_records: int = Field(ge=1, le=1000, description="records of one device per POST at most")
    max_wait_seconds: Duration = Field(
        description="how long the first record of a batch waits for more before it is sent"
    )

    @field_validator("max_wait_seconds")
    @classmethod
    def _bounded(cls, value: float) -> float:
        if value > 300:
            raise ValueError("at most 300 s: a waiting batch holds its partition's offsets back")
        return value


def _example_url(url: str) -> str:
    """``url`` with its dynamic fields filled in with sample digits, to validate it."""
    for field in DYNAMIC_FIELDS:
        url = url.replace(field, "0")
    return url


#: Endpoint options that only mean something for an HTTP endpoint: a ``tcp://`` one (raw
#: forwarding, ``format: dmt``) refuses them rather than ignore them.
HTTP_ONLY = ("secrets", "auth", "headers", "tls", "rate_limit_per_second", "batch")


class Endpoint(_Strict):
    name: Name
    url: str
    secrets: list[Secret] = Field(default_factory=list, max_length=10)
    auth: Auth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tls: Tls = Field(default_factory=Tls)
    filter: Filter = Field(default_factory=Filter)
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    max_concurrency: int = Field(10, ge=1, le=1000)
    rate_limit_per_second: float | None = Field(None, gt=0)
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    allow_private_network: bool = False
    enabled: bool = True
    format: Literal["fleetgate", "oem", "dmt"] = "fleetgate"
    batch: Batch | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = httpx.URL(_example_url(value))
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme == "tcp":
            if not url.host or url.port is None or url.raw_path not in (b"", b"/"):
                raise ValueError("a tcp:// URL is tcp://host:port, nothing more")
            if url.query or url.fragment or url.userinfo:
                raise ValueError("a tcp:// URL is tcp://host:port, nothing more")
            return value
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                "must be an http:// or https:// URL with a host (tcp://host:port: raw forwarding)"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name!r} is set by the connector and cannot be configured")
            if "\r" in text or "\n" in text:
                raise ValueError(f"the value of {name!r} contains a line break")
        return value

    @property
    def forwards(self) -> bool:
        """Raw TCP forwarding (``url: tcp://...``, ``format: dmt``), not webhooks."""
        return self.format == "dmt"

    @model_validator(mode="after")
    def _checks(self) -> Endpoint:
        tcp = self.url.partition(":")[0].lower() == "tcp"  # the url is checked already
        if tcp and self.format != "dmt":
            raise ValueError(
                "a tcp:// url forwards Digital Matter's binary protocol: set 'format: dmt'"
            )
        if self.format == "dmt" and not tcp:
            raise ValueError("'format: dmt' forwards over raw TCP: the url must be tcp://host:port")
        if tcp:
            given = [name for name in HTTP_ONLY if name in self.model_fields_set]
            if given:
                raise ValueError(
                    f"{', '.join(repr(n) for n in given)}: HTTP options, meaningless for a "
                    "tcp:// endpoint (raw forwarding)"
                )
            f = self.filter
            if f.cameras is not None or f.media is not None:
                raise ValueError(
                    "filter 'cameras'/'media' select files; a tcp:// endpoint forwards "
                    "Digital Matter records only"
                )
            if f.types is not None and f.types != ["record"]:
                raise ValueError(
                    "filter 'types': a tcp:// endpoint forwards records only (types: [record])"
                )
        if self.auth is not None and any(h.lower() == "authorization" for h in self.headers):
            raise ValueError("give either 'auth' or an 'Authorization' header, not both")
        if self.format == "oem":
            files = [t for t in self.filter.types or () if t != "record"]
            if files:
                raise ValueError(
                    f"format 'oem' carries telemetry records only; remove {files} from filter.types"
                )
        if self.batch is not None and self.format != "oem":
            raise ValueError("'batch' needs 'format: oem' (a fleetgate-format POST is one event)")
        if not self.allow_private_network:
            why = disallowed_address(httpx.URL(_example_url(self.url)).host)
            if why is not None:
                raise ValueError(f"url: {why}; set 'allow_private_network: true' to deliver there")
        return self

    def accepts(self, event_type: str, imei: str, camera: str | None, media: str | None) -> bool:
        """Whether the endpoint's filter lets this event through (a record has no camera or
        media: a filter on those leaves records out)."""
        f = self.filter
        return (
            (f.types is None or event_type in f.types)
            and (f.imeis is None or imei in f.imeis)
            and (f.cameras is None or camera in f.cameras)
            and (f.media is None or media in f.media)
        )


class ConnectorConfig(_Strict):
    retry: RetryConfig = Field(default_factory=RetryConfig)
    endpoints: list[Endpoint] = Field(min_length=1)

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, value: list[Endpoint]) -> list[Endpoint]:
        seen: set[str] = set()
        for endpoint in value:
            if endpoint.name in seen:
                raise ValueError(f"endpoint name {endpoint.name!r} is used twice")
            seen.add(endpoint.name)
        return value

    @property
    def enabled(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.enabled]

    def endpoint(self, name: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.name == name), None)


def _expand(value: Any, where: str, env: dict[str, str] | os._Environ[str]) -> Any:
    """Replace ``${NAME}`` in every string of ``value``; ``where`` names the field for errors."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            escaped, name = match.groups()
            if escaped:
                return "${" + name + "}"
            if not _ENV_NAME.fullmatch(name):
                raise ConfigError(f"{where}: ${{{name}}} is not a valid variable reference")
            if name not in env:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return env[name]

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    return value


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _describe(error: ValidationError, raw: Any) -> str:
    lines = []
    for item in error.errors(include_url=False):
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        where = _location(loc)
        # Name the endpoint too, people know it by name rather than by index.
        if len(loc) >= 2 and loc[0] == "endpoints" and isinstance(loc[1], int):
            try:
                name = raw["endpoints"][loc[1]]["name"]
            except (KeyError, IndexError, TypeError):
                name = None
            if isinstance(name, str):
                where += f" (endpoint {name!r})"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def parse_config(
    text: str,
    source: str = "<config>",
    env: dict[str, str] | None = None,
    base: Path | None = None,
) -> ConnectorConfig:
    """Parse YAML ``text``; raise :class:`ConfigError` naming ``source`` and the bad field.

    ``env`` replaces ``os.environ`` for ``${NAME}`` references; relative ``tls`` file paths
    are taken from ``base`` (the config file's folder).
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with 'endpoints:'")
    try:
        expanded = _expand(raw, "", os.environ if env is None else env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return ConnectorConfig.model_validate(expanded, context={"base": base})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc, expanded)}") from None


def load_config(path: Path | str, env: dict[str, str] | None = None) -> ConnectorConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the connector config: {exc.strerror}") from None
    return parse_config(text, str(path), env, base=Path(path).parent)
