"""S3-compatible object storage through the ``minio`` client (its blocking calls run in threads).

An object appears under its key only once every byte is there: a small file is one PUT, a
larger one a multipart upload that S3 publishes at CompleteMultipartUpload (an upload cut
short is aborted, or left invisible until a bucket lifecycle rule removes it).

Not every S3-compatible server keeps that promise: s3rver (the embedded default) streams a
PUT's body straight into the object's file and writes its metadata only once the body is
complete, so a PUT cut short (the assembler killed mid-request) leaves the bytes that arrived
under the key, without metadata (or, over an existing object, with the old one). Every PUT of
this store carries the file's ``sha256`` metadata in the same request, so an object without it,
or whose size is not the size of the bytes its ``sha256`` names, is such a remnant: it is
overwritten, not taken for another file's content.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import certifi
import structlog
import urllib3
from minio import Minio
from minio.error import S3Error

from .health import S3Watch
from .settings import AssemblerSettings

__all__ = ["ObjectStore", "StoreResult"]

#: Parts of one multipart upload sent at once (memory: this many parts per upload).
_PARALLEL_PARTS = 2

_log = structlog.get_logger("fleetgate.assembler")


@dataclass(frozen=True, slots=True)
class StoreResult:
    key: str
    uploaded: bool  # False: an identical object (same sha256) was there already


class ObjectStore:
    def __init__(self, settings: AssemblerSettings, watch: S3Watch | None = None) -> None:
        #: Times every request while it runs (see :mod:`assembler.health`).
        self.watch = watch or S3Watch(settings.s3_slow_seconds)
        self.bucket = settings.s3_bucket
        self.part_size = settings.s3_part_size
        timeout = settings.s3_timeout_seconds
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
            maxsize=8,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            # A short burst of retries inside one attempt; the caller retries for ever.
            retries=urllib3.Retry(
                total=2, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self.client = Minio(
            settings.s3_host,
            access_key=settings.s3_access_key or None,
            secret_key=settings.s3_secret_key.get_secret_value() or None,
            secure=settings.s3_tls,
            region=settings.s3_region or None,
            http_client=http,
        )

    async def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing; True if it was created."""
        return await asyncio.to_thread(self._ensure_bucket)

    def _ensure_bucket(self) -> bool:
        with self.watch.request("bucket"):
            if self.client.bucket_exists(self.bucket):
                return False
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:  # another instance made it meanwhile
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                return False
            return True

    async def store(
        self, path: Path, key: str, content_type: str, metadata: dict[str, str], sha256: str
    ) -> StoreResult:
        """Upload ``path`` under ``key`` unless an object with the same SHA-256 is there.

        An object with other content under the key (the same transfer stored with different
        bytes) is kept: this file then goes to ``key`` with ``-<sha256[:12]>`` before the
        extension, so every key only ever holds the bytes its event announced. A remnant of an
        upload cut short (:func:`_remnant`) is no content: it is overwritten.
        """
        return await asyncio.to_thread(self._store, path, key, content_type, metadata, sha256)

    def _store(
        self, path: Path, key: str, content_type: str, metadata: dict[str, str], sha256: str
    ) -> StoreResult:
        size = path.stat().st_size
        for candidate in (key, _variant(key, sha256)):
            existing = self._existing(candidate)
            if existing is not None and existing.sha256 == sha256 and existing.size == size:
                return StoreResult(candidate, uploaded=False)
            remnant = existing is not None and _remnant(existing, sha256, size)
            if existing is None or remnant:
                if remnant:
                    _log.warning(
                        "s3_remnant_replaced",
                        key=candidate,
                        found_size=existing.size if existing else None,
                        found_sha256=existing.sha256 if existing else None,
                        size=size,
                        sha256=sha256,
                    )
                with self.watch.request("put"):
                    self.client.fput_object(
                        self.bucket,
                        candidate,
                        str(path),
                        content_type=content_type,
                        metadata=dict(metadata),
                        part_size=self.part_size,
                        num_parallel_uploads=_PARALLEL_PARTS,
                    )
                return StoreResult(candidate, uploaded=True)
        raise RuntimeError(f"{key} and its variant both hold other content")

    def _existing(self, key: str) -> _Existing | None:
        """The object under ``key`` (its sha256 metadata, "" if it has none, and its size);
        None if there is none."""
        with self.watch.request("stat"):  # "no such key" is an answer, not a failure
            try:
                stat = self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                    return None
                raise
        headers = stat.metadata or {}
        sha256 = ""
        for name, value in headers.items():
            if name.lower() == "x-amz-meta-sha256":
                sha256 = str(value)
        return _Existing(sha256, stat.size)


@dataclass(frozen=True, slots=True)
class _Existing:
    sha256: str  # "" when the object has no sha256 metadata
    size: int | None


def _remnant(existing: _Existing, sha256: str, size: int) -> bool:
    """Whether ``existing`` is what a PUT cut short left (on a server that publishes a PUT's
    bytes as they arrive, like s3rver), rather than a file's content: it has no sha256
    metadata (every PUT of this store sends it, in the same request), or it has this file's
    sha256 but not its size (the bytes that sha256 names have that size). Such an object is
    never a file's content the assembler stored, so overwriting it loses nothing the pipeline
    announced. An object with another sha256 is kept (see :meth:`ObjectStore.store`)."""
    if not existing.sha256:
        return True
    return existing.sha256 == sha256 and existing.size != size


def _variant(key: str, sha256: str) -> str:
    stem, dot, extension = key.rpartition(".")
    if not dot:
        return f"{key}-{sha256[:12]}"
    return f"{stem}-{sha256[:12]}.{extension}"
