"""Presigned GET URLs of stored files, for webhook receivers to download them.

Presigning is a local computation (SigV4 over the URL): no request reaches S3. A SigV4 URL is
bound to the host it names, so when receivers reach S3 under another address than the
connector does (``s3_public_url``), the URL is signed for that public host instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from minio import Minio

from .settings import ConnectorSettings

__all__ = ["Presigner", "split_public_url"]


def split_public_url(url: str) -> tuple[str, bool]:
    """``https://files.example.com:8443`` -> (``files.example.com:8443``, secure)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"s3_public_url {url!r} must be http(s)://host[:port]")
    if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"s3_public_url {url!r} must have no path, query or user")
    return parts.netloc, parts.scheme == "https"


class Presigner:
    def __init__(self, settings: ConnectorSettings) -> None:
        if settings.s3_public_url:
            endpoint, secure = split_public_url(settings.s3_public_url)
        else:
            endpoint, secure = settings.s3_endpoint, settings.s3_secure
        # With the region given, minio never asks the server for the bucket's location.
        self._client = Minio(
            endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=secure,
            region=settings.s3_region,
        )
        self.expiry = timedelta(seconds=settings.presign_expiry_seconds)

    def url(self, bucket: str, key: str, now: datetime | None = None) -> tuple[str, datetime]:
        """A GET URL of ``bucket/key`` and the moment it expires (whole seconds, UTC)."""
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        url = self._client.presigned_get_object(bucket, key, expires=self.expiry, request_date=now)
        return url, now + self.expiry
