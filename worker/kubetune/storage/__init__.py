"""Storage backends behind one interface: a local folder (the default) and S3."""

from collections.abc import Mapping

from kubetune.storage.base import ObjectTooLarge, OutagePolicy, Storage, StorageError

__all__ = ["ObjectTooLarge", "OutagePolicy", "Storage", "StorageError", "open_storage"]


def open_storage(
    uri: str,
    *,
    endpoint_url: str | None = None,
    credentials: Mapping[str, str] | None = None,
    outage_s: float = 0.0,
) -> Storage:
    """A backend for uri: `s3://bucket/prefix` uses S3, anything else a local folder.

    credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)
    replace the environment's for S3; None means boto3's usual lookup. outage_s:
    how long S3 that answered before is retried once it stops answering."""
    if uri.startswith("s3://"):
        from kubetune.storage.s3 import S3Storage

        return S3Storage(uri, endpoint_url=endpoint_url, credentials=credentials, outage_s=outage_s)
    from kubetune.storage.local import LocalStorage

    return LocalStorage(uri)
