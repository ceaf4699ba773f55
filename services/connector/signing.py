"""Standard Webhooks signatures (https://www.standardwebhooks.com/, "Signature scheme").

Each webhook carries ``webhook-id`` (the event id: the same on every attempt and replay),
``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``: for every
configured secret, ``v1,`` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")), separated by
spaces. With two secrets during a rotation a receiver that knows either one verifies it.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence

__all__ = ["SECRET_PREFIX", "secret_key", "sign"]

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (validated when the config is loaded)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,<base64>`` per key, space-separated."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(key, content, "sha256")).decode() for key in keys
    )
