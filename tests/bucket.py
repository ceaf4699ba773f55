"""Reading a bucket whole in tests: every object's bytes by key."""

from __future__ import annotations

from minio import Minio

__all__ = ["contents"]


def contents(client: Minio, bucket: str) -> dict[str, bytes]:
    """Every object of ``bucket`` and its bytes, by key."""
    out = {}
    for obj in client.list_objects(bucket, recursive=True):
        assert obj.object_name is not None
        response = client.get_object(bucket, obj.object_name)
        try:
            out[obj.object_name] = response.read()
        finally:
            response.close()
            response.release_conn()
    return out
