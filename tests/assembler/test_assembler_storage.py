"""The object store against s3rver, with the remnants an upload cut short leaves there.

s3rver writes a PUT's body into the object's file as it arrives and its metadata only once the
body is complete: a PUT cut short (the assembler SIGKILLed mid-request) leaves a partial object
under the key, without metadata, or with the metadata of the object it was overwriting. Real S3
publishes a PUT whole or not at all. The store must take such a remnant for what it is (not a
file's content): the replayed file overwrites it under its own key, instead of going to a
variant key beside it (two objects for one file, one of them wrong bytes).
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from assembler.settings import AssemblerSettings
from assembler.storage import ObjectStore
from tests.bucket import contents
from tests.conftest import S3
from tests.helpers import eventually_sync

KEY = "356307042441013/2026/03/01/20260301T123045Z_dualcam_photo_front_0123456789ab.jpg"
DATA = os.urandom(60_000)
SHA256 = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(s3: S3) -> Iterator[ObjectStore]:
    settings = AssemblerSettings(
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,
        s3_bucket=s3.bucket,
    )
    yield ObjectStore(settings)


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    path = tmp_path / "file.part"
    path.write_bytes(DATA)
    return path


def cut_put(s3: S3, key: str, body: bytes, sent: int, sha256: str | None) -> None:
    """A PUT of ``body`` whose client dies after ``sent`` bytes (as a SIGKILL cuts it: the
    bytes in the socket go out, then the connection closes); returns once s3rver holds them."""
    host, port = s3.endpoint.rsplit(":", 1)
    head = f"PUT /{s3.bucket}/{key} HTTP/1.1\r\nHost: {s3.endpoint}\r\n"
    head += f"Content-Length: {len(body)}\r\nContent-Type: image/jpeg\r\n"
    if sha256 is not None:
        head += f"x-amz-meta-sha256: {sha256}\r\n"
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head.encode() + b"\r\n" + body[:sent])

    client = s3.client()

    def holds() -> bool:
        try:
            return client.stat_object(s3.bucket, key).size == sent
        except S3Error:
            return False

    eventually_sync(holds, 10, f"s3rver holding the {sent} bytes sent")


def put(client: Minio, bucket: str, key: str, data: bytes, sha256: str) -> None:
    client.put_object(bucket, key, io.BytesIO(data), len(data), metadata={"sha256": sha256})


def sha256_metadata(client: Minio, bucket: str, key: str) -> str | None:
    metadata = client.stat_object(bucket, key).metadata or {}
    return next((v for k, v in metadata.items() if k.lower() == "x-amz-meta-sha256"), None)


async def test_a_remnant_without_metadata_is_overwritten_under_the_key(
    s3: S3, store: ObjectStore, spool: Path
) -> None:
    cut_put(s3, KEY, DATA, 30_000, sha256=SHA256)
    client = s3.client()
    remnant = client.stat_object(s3.bucket, KEY)
    # s3rver's gap: a PUT cut short is published, partial, without its metadata
    assert remnant.size == 30_000
    assert sha256_metadata(client, s3.bucket, KEY) is None

    result = await store.store(spool, KEY, "image/jpeg", {"sha256": SHA256}, SHA256)

    assert (result.key, result.uploaded) == (KEY, True)
    assert contents(client, s3.bucket) == {KEY: DATA}
    assert sha256_metadata(client, s3.bucket, KEY) == SHA256


async def test_a_remnant_under_the_files_own_metadata_is_overwritten(
    s3: S3, store: ObjectStore, spool: Path
) -> None:
    """A PUT cut short over the complete object keeps the old metadata (this file's sha256)
    over fewer bytes: taking it for stored would leave the key truncated."""
    client = s3.client()
    put(client, s3.bucket, KEY, DATA, SHA256)
    cut_put(s3, KEY, DATA, 20_000, sha256=SHA256)
    assert sha256_metadata(client, s3.bucket, KEY) == SHA256

    result = await store.store(spool, KEY, "image/jpeg", {"sha256": SHA256}, SHA256)

    assert (result.key, result.uploaded) == (KEY, True)
    assert contents(client, s3.bucket) == {KEY: DATA}


async def test_the_same_file_is_not_uploaded_again(s3: S3, store: ObjectStore, spool: Path) -> None:
    client = s3.client()
    put(client, s3.bucket, KEY, DATA, SHA256)
    result = await store.store(spool, KEY, "image/jpeg", {"sha256": SHA256}, SHA256)
    assert (result.key, result.uploaded) == (KEY, False)
    assert contents(client, s3.bucket) == {KEY: DATA}


async def test_other_content_under_the_key_is_kept_and_the_file_goes_beside_it(
    s3: S3, store: ObjectStore, spool: Path
) -> None:
    """An object with another sha256 is what an earlier event announced: never overwritten,
    whatever its size."""
    client = s3.client()
    for other in (os.urandom(len(DATA)), os.urandom(1_000)):
        put(client, s3.bucket, KEY, other, hashlib.sha256(other).hexdigest())
        result = await store.store(spool, KEY, "image/jpeg", {"sha256": SHA256}, SHA256)
        variant = KEY.removesuffix(".jpg") + f"-{SHA256[:12]}.jpg"
        assert (result.key, result.uploaded) == (variant, True)
        assert contents(client, s3.bucket) == {KEY: other, variant: DATA}
        client.remove_object(s3.bucket, variant)
