"""Presigned GET URLs of stored files, for webhook receivers to download them.

Presigning is a local computation (SigV4 over the URL): no request reaches S3. A SigV4 URL is
bound to the host it names, so when receivers reach S3 under another address than the
connector does (``s3_public_url``), the URL is signed for that public host instead.

minio builds the object's URL (path or virtual-host style, the key's encoding) and checks the
bucket and key; the signature itself is computed here, with the day's signing key kept, as it
is the same for every URL of that day: a webhook costs one hash and one HMAC, not six.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

from minio import Minio
from minio.helpers import check_bucket_name, check_object_name, queryencode

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
        self._region = settings.s3_region
        self._access_key = settings.s3_access_key
        self._secret_key = settings.s3_secret_key.get_secret_value()
        self._buckets: set[str] = set()  # names already checked
        self._day: tuple[str, str, bytes] | None = None  # date, credential, signing key

    def url(self, bucket: str, key: str, now: datetime | None = None) -> tuple[str, datetime]:
        """A GET URL of ``bucket/key`` and the moment it expires (whole seconds, UTC);
        ValueError for a bucket or key S3 refuses."""
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        if not (self._access_key and self._secret_key):  # unsigned: a public bucket
            url = self._client.presigned_get_object(bucket, key, self.expiry, request_date=now)
            return url, now + self.expiry
        if bucket not in self._buckets:
            check_bucket_name(bucket, s3_check=self._client._base_url.is_aws_host)
            self._buckets.add(bucket)
        check_object_name(key)
        base = self._client._base_url.build(
            method="GET", region=self._region, bucket_name=bucket, object_name=key
        )
        return self._sign(base.scheme, base.netloc, base.path, now), now + self.expiry

    def _sign(self, scheme: str, host: str, path: str, now: datetime) -> str:
        """SigV4 query signing of a GET (AWS "Authenticating Requests: Using Query
        Parameters"): host the only signed header, payload unsigned."""
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        if self._day is None or self._day[0] != date:
            scope = f"{date}/{self._region}/s3/aws4_request"
            key = _hmac(("AWS4" + self._secret_key).encode(), date)
            for part in (self._region, "s3", "aws4_request"):
                key = _hmac(key, part)
            self._day = (date, queryencode(f"{self._access_key}/{scope}"), key)
        _, credential, signing_key = self._day
        query = (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential={credential}"
            f"&X-Amz-Date={stamp}"
            f"&X-Amz-Expires={int(self.expiry.total_seconds())}"
            "&X-Amz-SignedHeaders=host"
        )  # already in canonical (sorted) order
        request = f"GET\n{path or '/'}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD"
        scope = f"{date}/{self._region}/s3/aws4_request"
        to_sign = (
            f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n" + hashlib.sha256(request.encode()).hexdigest()
        )
        signature = hmac.digest(signing_key, to_sign.encode(), "sha256").hex()
        return f"{scheme}://{host}{path}?{query}&X-Amz-Signature={signature}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.digest(key, text.encode(), "sha256")
