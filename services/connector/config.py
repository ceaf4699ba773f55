"""The YAML file of webhook endpoints.

.. code-block:: yaml

    endpoints:
      - name: crm                      # unique, [a-z0-9_-]; the consumer group is {prefix}-crm
        url: https://hooks.example.com/fleetgate
        auth:
          bearer: ${CRM_TOKEN}         # or  basic: {username: u, password: ${CRM_PASSWORD}}
        headers:
          X-Device: "[IMEI]"           # [IMEI] becomes the event's IMEI
        tls: {verify: true, ca_file: /etc/ssl/private-ca.pem}
        timeout_seconds: 10
        enabled: true

``${NAME}`` anywhere in a string value is replaced by the environment variable ``NAME`` when the
file is loaded (``$${NAME}`` stays a literal ``${NAME}``); an unset variable is an error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

import httpx
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "RESERVED_HEADERS",
    "Auth",
    "BasicAuth",
    "ConfigError",
    "ConnectorConfig",
    "Endpoint",
    "Tls",
    "load_config",
    "parse_config",
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


class Tls(_Strict):
    verify: bool = True
    ca_file: Path | None = Field(
        None, description="PEM bundle trusted instead of the system's; relative to the file"
    )

    @field_validator("ca_file")
    @classmethod
    def _relative(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get("base")
        if value is not None and base is not None and not value.is_absolute():
            return Path(base) / value
        return value

    @model_validator(mode="after")
    def _ca(self) -> Tls:
        if self.ca_file is not None:
            if not self.verify:
                raise ValueError("'ca_file' has no effect with 'verify: false'")
            if not self.ca_file.is_file():
                raise ValueError(f"ca_file {str(self.ca_file)!r} is not a readable file")
        return self


Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,100}$")]


class Endpoint(_Strict):
    name: Name
    url: str
    auth: Auth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tls: Tls = Field(default_factory=Tls)
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
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

    @model_validator(mode="after")
    def _auth_header(self) -> Endpoint:
        if self.auth is not None and any(h.lower() == "authorization" for h in self.headers):
            raise ValueError("give either 'auth' or an 'Authorization' header, not both")
        return self


class ConnectorConfig(_Strict):
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

    ``env`` replaces ``os.environ`` for ``${NAME}`` references; relative ``ca_file`` paths are
    taken from ``base`` (the config file's folder).
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
