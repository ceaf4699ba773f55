"""Presigned GET URLs of stored files, for webhook receivers to download them.

Presigning is a local computation (SigV4 over the URL): no request reaches S3. A SigV4 URL is
bound to the host it names, so when receivers reach S3 under another address than the
connector does (``s3_public_url``), the URL is signed for that public host instead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from minio import Minio

from runtime.settings import split_s3_url

from .settings import ConnectorSettings

__all__ = ["Presigner"]


class Presigner:
    def __init__(self, settings: ConnectorSettings) -> None:
        if settings.s3_public_url:
            endpoint, secure = split_s3_url(settings.s3_public_url)
        else:
            endpoint, secure = settings.s3_host, settings.s3_tls
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
