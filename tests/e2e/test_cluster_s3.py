"""Acceptance of the local cluster's S3 server (versitygw) with boto3 as the
worker uses it: buckets, a 100 MB multipart upload, conditional writes,
listing and deletion."""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import hashlib
import io
import os
import uuid

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from localcluster.testing import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MB = 1024 * 1024


@pytest.fixture
def bucket(cluster: Cluster) -> object:
    s3 = cluster.s3()
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def test_env_file_settings_reach_boto3(cluster: Cluster) -> None:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=cluster.s3_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=cluster.s3_env["AWS_SECRET_ACCESS_KEY"],
        region_name=cluster.s3_env["AWS_DEFAULT_REGION"],
    )
    # boto3 reads AWS_ENDPOINT_URL itself: the worker needs no endpoint flag.
    os.environ["AWS_ENDPOINT_URL"] = cluster.s3_env["AWS_ENDPOINT_URL"]
    try:
        names = [b["Name"] for b in session.client("s3").list_buckets()["Buckets"]]
    finally:
        del os.environ["AWS_ENDPOINT_URL"]
    assert isinstance(names, list)


def test_multipart_upload_of_100_mb_round_trips(cluster: Cluster, bucket: str) -> None:
    s3 = cluster.s3()
    data = os.urandom(100 * MB)
    config = TransferConfig(multipart_threshold=8 * MB, multipart_chunksize=16 * MB)

    s3.upload_fileobj(io.BytesIO(data), bucket, "big/blob.bin", Config=config)

    head = s3.head_object(Bucket=bucket, Key="big/blob.bin")
    assert head["ContentLength"] == 100 * MB
    assert head["ETag"].strip('"').endswith("-7")  # 100 MB in 16 MB parts
    back = io.BytesIO()
    s3.download_fileobj(bucket, "big/blob.bin", back, Config=config)
    assert hashlib.sha256(back.getvalue()).digest() == hashlib.sha256(data).digest()


def test_explicit_multipart_upload(cluster: Cluster, bucket: str) -> None:
    s3 = cluster.s3()
    parts = [os.urandom(5 * MB), os.urandom(5 * MB), b"tail"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="parts.bin")
    done = []
    for number, body in enumerate(parts, start=1):
        answer = s3.upload_part(
            Bucket=bucket,
            Key="parts.bin",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=body,
        )
        done.append({"PartNumber": number, "ETag": answer["ETag"]})

    s3.complete_multipart_upload(
        Bucket=bucket, Key="parts.bin", UploadId=upload["UploadId"], MultipartUpload={"Parts": done}
    )

    assert s3.get_object(Bucket=bucket, Key="parts.bin")["Body"].read() == b"".join(parts)


def test_conditional_put_if_none_match(cluster: Cluster, bucket: str) -> None:
    s3 = cluster.s3()

    s3.put_object(Bucket=bucket, Key="marker.json", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key="marker.json", Body=b"second", IfNoneMatch="*")

    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key="marker.json")["Body"].read() == b"first"


def test_list_and_delete(cluster: Cluster, bucket: str) -> None:
    s3 = cluster.s3()
    keys = ["run/a/result.json", "run/a/checkpoint_000001/m.json", "run/b/result.json"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    listed = s3.list_objects_v2(Bucket=bucket, Prefix="run/a/")
    folders = s3.list_objects_v2(Bucket=bucket, Prefix="run/", Delimiter="/")
    s3.delete_object(Bucket=bucket, Key="run/b/result.json")
    after = s3.list_objects_v2(Bucket=bucket, Prefix="run/")

    assert sorted(o["Key"] for o in listed["Contents"]) == sorted(keys[:2])
    assert sorted(p["Prefix"] for p in folders["CommonPrefixes"]) == ["run/a/", "run/b/"]
    assert sorted(o["Key"] for o in after["Contents"]) == sorted(keys[:2])


def test_conditional_put_if_match(cluster: Cluster, bucket: str) -> None:
    s3 = cluster.s3()
    etag = s3.put_object(Bucket=bucket, Key="state.json", Body=b"v1")["ETag"]

    s3.put_object(Bucket=bucket, Key="state.json", Body=b"v2", IfMatch=etag)
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=bucket, Key="state.json", Body=b"v3", IfMatch=etag)

    assert stale.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key="state.json")["Body"].read() == b"v2"
