"""`kubetune.submit`: a Trainable (class or function) to a TrainableJob on the
cluster, from a script or a notebook.

A trainable importable from an installed package is named by MODULE:ATTR
(`spec.trainable`), as in YAML. One defined in `__main__`, a notebook or a
local module is shipped by value: pickled with cloudpickle, uploaded into the
job's own run folder under its sha256, and named in `spec.code`; the worker
checks the digest and the Python version before it unpickles anything, and
the operator refuses a code URI outside the job's folder (kubetune.runtime.shipping).
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Mapping
from typing import Any

import kubetune_contract as contract
from kubetune.client.job import Job
from kubetune.client.kube import Kube
from kubetune.runtime import shipping
from kubetune.sdk.checkpoint_config import CheckpointConfig
from kubetune.sdk.errors import InvalidSettings
from kubetune_contract import API_GROUP, API_VERSION, KIND

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CHECKPOINT_KEYS = {
    "checkpoint_frequency": "frequency",
    "checkpoint_at_end": "atEnd",
    "num_to_keep": "numToKeep",
    "checkpoint_score_attribute": "scoreAttribute",
    "checkpoint_score_order": "scoreOrder",
}


def submit(
    trainable: Any,
    *,
    name: str | None = None,
    namespace: str | None = None,
    config: Mapping[str, Any] | None = None,
    stop: Mapping[str, Any] | None = None,
    checkpoint: CheckpointConfig | Mapping[str, Any] | None = None,
    storage: str | None = None,
    endpoint_url: str | None = None,
    storage_secret: str | None = None,
    resources: Mapping[str, Any] | None = None,
    image: str | None = None,
    template: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    max_failures: int | None = None,
    restore_from: str | None = None,
    suspend: bool = False,
    ship: bool | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> Job:
    """Create a TrainableJob running `trainable` and return its handle.

    storage: s3://BUCKET/PREFIX; the job's folder is <storage>/<namespace>/<name>.
    endpoint_url: the S3 endpoint the worker uses (MinIO, Ceph ...; also used
    here to upload shipped code, else $AWS_ENDPOINT_URL). storage_secret: the
    Secret with the worker's S3 credentials. resources: {"nvidia.com/gpu": 1}
    (limits) or a full {"limits": ..., "requests": ...}. ship: None ships by
    value what the image cannot import (defined in __main__, a notebook or a
    local module); True always; False never.
    """
    if not storage or not str(storage).startswith("s3://"):
        raise InvalidSettings(
            f"storage={storage!r}: give the job's S3 folder as s3://BUCKET/PREFIX "
            "(a worker pod cannot write to this machine's disk)"
        )
    kube = Kube.connect(kubeconfig, context)
    namespace = namespace or kube.namespace
    name = name or _default_name(trainable)
    if not _NAME.match(name):
        raise InvalidSettings(
            f"name={name!r}: a TrainableJob name is at most 63 lowercase letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    run_uri = f"{storage.rstrip('/')}/{namespace}/{name}"
    spec: dict[str, Any] = {"storage": {"uri": storage.rstrip("/")}}
    if endpoint_url:
        spec["storage"]["endpointURL"] = endpoint_url
    if storage_secret:
        spec["storage"]["secretRef"] = {"name": storage_secret}

    reference = trainable if isinstance(trainable, str) else shipping.importable_name(trainable)
    if ship is True or (ship is None and reference is None):
        spec["code"] = upload_code(trainable, run_uri, endpoint_url)
    elif reference is None:
        raise InvalidSettings(
            f"{trainable!r} cannot be named as MODULE:ATTR (defined in __main__, a "
            "notebook or a function's body): leave ship unset to ship it by value"
        )
    else:
        spec["trainable"] = reference

    optional = {
        "config": dict(config) if config is not None else None,
        "stop": dict(stop) if stop is not None else None,
        "checkpoint": checkpoint_spec(checkpoint),
        "resources": resources_spec(resources),
        "image": image,
        "template": dict(template) if template is not None else None,
        "maxFailures": max_failures,
        "restoreFrom": restore_from,
        "suspend": suspend or None,
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    body = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": spec,
    }
    kube.create_job(namespace, body)
    return Job(name, namespace, kube=kube)


def _default_name(trainable: Any) -> str:
    base = trainable.rsplit(":", 1)[-1] if isinstance(trainable, str) else trainable.__name__
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:50] or "job"
    return f"{slug}-{uuid.uuid4().hex[:5]}"


def upload_code(trainable: Any, run_uri: str, endpoint_url: str | None) -> dict[str, str]:
    from kubetune.storage import open_storage

    if isinstance(trainable, str):
        raise InvalidSettings("ship=True needs the class or function, not a MODULE:ATTR string")
    data = shipping.pack(trainable)
    sha = shipping.digest(data)
    store = open_storage(run_uri, endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
    owner = store.read_bytes(contract.RUN_FILE)
    if owner is not None:
        raise InvalidSettings(
            f"{run_uri} already holds another run (its {contract.RUN_FILE}): delete that "
            "folder, or choose another name or storage"
        )
    key = contract.code_key(sha)
    if store.size(key) != len(data):
        store.write_bytes(key, data)
    return {
        "uri": shipping.code_uri(run_uri, sha),
        "sha256": sha,
        "python": shipping.python_version(),
    }


def checkpoint_spec(
    checkpoint: CheckpointConfig | Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    if isinstance(checkpoint, CheckpointConfig):
        fields = dataclasses.asdict(checkpoint)
        out = {_CHECKPOINT_KEYS[k]: v for k, v in fields.items() if k in _CHECKPOINT_KEYS}
        if not fields.get("checkpoint_score_attribute"):
            out.pop("scoreOrder", None)  # the CRD ranks only by a named attribute
        return {k: v for k, v in out.items() if v is not None}
    return dict(checkpoint)


def resources_spec(resources: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if resources is None:
        return None
    if set(resources) <= {"limits", "requests", "claims"}:
        return dict(resources)
    return {"limits": {k: str(v) if not isinstance(v, str) else v for k, v in resources.items()}}
