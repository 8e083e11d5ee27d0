"""One S3 object composed from stored objects and bytes, kept apart from the
other object operations (kubetune.storage.s3): S3's multipart rules as a pure
plan (which stored objects are copied on the server, which bytes are sent, in
parts S3 accepts), and the one multipart upload that carries a plan out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kubetune.storage.base import Piece

MiB = 1024 * 1024
GiB = 1024 * MiB
# S3's multipart rules: every part but the last at least 5 MiB, a copied part at
# most 5 GiB, at most 10,000 parts.
MIN_PART = 5 * MiB
MAX_COPY_PART = 5 * GiB
MAX_PARTS = 10_000
# Bytes gathered in memory for one uploaded part of a composed object.
DATA_PART = 64 * MiB

# A part: ("copy", (key, first byte, last byte), size) or ("data", bytes, size).
Part = tuple[str, Any, int]


def plan_parts(
    pieces: Sequence[Piece], key_of: Callable[[str], str], read: Callable[[Piece], bytes]
) -> list[Part]:
    """("copy", key, size) and ("data", bytes, size) parts obeying S3's
    rules: a copied part follows nothing or at least 5 MiB of data. key_of
    names a stored piece's object; read gives a piece's bytes."""
    plan: list[Part] = []
    buf = bytearray()
    for piece in pieces:
        copyable = piece.path is not None and piece.size >= MIN_PART
        if copyable and (not buf or len(buf) >= MIN_PART):
            if buf:
                plan.append(("data", bytes(buf), len(buf)))
                buf = bytearray()
            assert piece.path is not None
            plan.extend(copy_ranges(key_of(piece.path), piece.size))
            continue
        buf += read(piece)
        if len(buf) >= DATA_PART:
            plan.append(("data", bytes(buf), len(buf)))
            buf = bytearray()
    if buf or not plan:
        plan.append(("data", bytes(buf), len(buf)))
    return plan


def copy_ranges(key: str, size: int) -> list[Part]:
    """A stored object as copied parts of at most 5 GiB each, split evenly so
    that none falls under 5 MiB."""
    count = max(1, -(-size // MAX_COPY_PART))
    step = -(-size // count)
    out: list[Part] = []
    for first in range(0, size, step):
        last = min(size, first + step) - 1
        out.append(("copy", (key, first, last), last - first + 1))
    return out


def upload_parts(client: Any, bucket: str, key: str, plan: Sequence[Part]) -> None:
    """One multipart upload of `plan` to bucket/key, aborted if any part fails;
    boto3's errors leave as they are (the caller translates them)."""
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    upload_id = upload["UploadId"]
    try:
        parts = []
        for number, (kind, src, _n) in enumerate(plan, start=1):
            if kind == "copy":
                src_key, first, last = src
                resp = client.upload_part_copy(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": bucket, "Key": src_key},
                    CopySourceRange=f"bytes={first}-{last}",
                )
                etag = resp["CopyPartResult"]["ETag"]
            else:
                resp = client.upload_part(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=src,
                )
                etag = resp["ETag"]
            parts.append({"PartNumber": number, "ETag": etag})
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )
    except BaseException:
        with contextlib.suppress(ClientError, BotoCoreError):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
