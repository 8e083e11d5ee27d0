"""What S3's failures mean to kubetune, kept apart from the object operations
(kubetune.storage.s3): boto3's errors as one-line StorageErrors naming the fix
(never a credential), which of them are transient, and riding a transient
outage out, so that a wrong endpoint fails in seconds and a restarting server
costs a job nothing."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import botocore.exceptions as botocore_errors
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from s3transfer.exceptions import RetriesExceededError

from kubetune.storage.base import OutagePolicy, StorageError

log = logging.getLogger("kubetune.storage")
T = TypeVar("T")

# Error codes that mean "the server refused who we are", whatever the reason.
CREDENTIAL_CODES = frozenset(
    {
        "403",
        "Forbidden",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "InvalidClientTokenId",
        "AuthorizationHeaderMalformed",
        "XAdminUserNotFound",  # versitygw: an access key it does not know
    }
)
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket", "404", "NotFound"})
# Answers that say "the server is there but cannot serve now": retried through an outage.
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
    }
)
# Servers without conditional writes answer these to If-None-Match.
NO_CONDITIONAL_CODES = frozenset({"NotImplemented", "501", "InvalidArgument", "InvalidRequest"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def storage_error(exc: Exception, *, bucket: str, endpoint: str, what: str = "") -> StorageError:
    """Map a boto3/botocore failure to one line naming the problem and the fix.
    Never includes credentials: only codes and our own words."""
    where = f" ({what})" if what else ""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in MISSING_BUCKET_CODES and (code == "NoSuchBucket" or not what):
            return StorageError(
                f"bucket '{bucket}' does not exist at {endpoint}: create it or fix storage.uri"
            )
        if code in CREDENTIAL_CODES or status == 403:
            return StorageError(
                f"credentials refused by {endpoint} for bucket '{bucket}' ({code or status}): "
                "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the secretRef"
            )
        message = str(err.get("Message", "")).splitlines()[0] if err.get("Message") else ""
        transient = code in TRANSIENT_CODES or (isinstance(status, int) and status >= 500)
        if code in NO_CONDITIONAL_CODES:
            transient = False  # 501 NotImplemented: the server lacks the feature for good
        return StorageError(
            f"S3 request to {endpoint} for bucket '{bucket}'{where} failed: "
            f"{code or status} {message}".rstrip(),
            transient=transient,
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"no usable S3 credentials for {endpoint}: set AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY or the job's storage.secretRef"
        )
    # Refused, unresolvable, timed out or cut off: all say "the endpoint is not
    # answering", which the user fixes the same way.
    if isinstance(
        exc,
        (botocore_errors.ConnectionError, botocore_errors.HTTPClientError, RetriesExceededError),
    ):
        return StorageError(
            f"cannot reach S3 endpoint {endpoint} ({type(exc).__name__}): check "
            "storage.endpointURL (or AWS_ENDPOINT_URL) and the network",
            transient=True,
        )
    if isinstance(exc, BotoCoreError):
        return StorageError(f"S3 error at {endpoint}{where}: {type(exc).__name__}: {exc}")
    return StorageError(f"S3 transfer to {endpoint}{where} failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def translated(bucket: str, endpoint: str, what: str = "") -> Iterator[None]:
    """boto3's errors raised inside leave as storage_error's StorageError."""
    try:
        yield
    except StorageError:
        raise
    except (ClientError, BotoCoreError, RetriesExceededError) as exc:
        raise storage_error(exc, bucket=bucket, endpoint=endpoint, what=what) from None


def ride_out(
    call: Callable[[], T],
    what: str,
    *,
    outage: OutagePolicy,
    answered: Callable[[], bool],
    endpoint: str,
) -> T:
    """`call()`, retried with backoff while it fails transiently, for up to the
    outage policy's time, if the endpoint has answered before (`answered()`,
    asked at each failure). Every operation called this way must be safe to
    repeat: whole-object writes, reads, listings, deletes, a multipart upload
    started afresh."""
    failing_since: float | None = None
    attempt = 0
    while True:
        try:
            value = call()
        except StorageError as exc:
            if not (exc.transient and answered()):
                raise
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            delay = outage.delay(attempt, now - failing_since)
            if delay is None:
                raise StorageError(
                    f"{exc} (still failing after {now - failing_since:.0f}s of retries)",
                    transient=True,
                ) from None
            if attempt == 0:
                log.warning(
                    "S3 at %s is not answering (%s): retrying for up to %.0fs",
                    endpoint,
                    what,
                    outage.outage_s,
                )
            time.sleep(delay)
            attempt += 1
            continue
        if failing_since is not None:
            log.warning(
                "S3 at %s answers again after %.1fs (%s)",
                endpoint,
                time.monotonic() - failing_since,
                what,
            )
        return value
