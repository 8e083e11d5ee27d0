"""The Kubernetes API the operator serves and the client and tools call: the
group, version, kinds and plurals of kubetune's resources, and the labels the
operator puts on the pods and jobs it makes."""

from __future__ import annotations

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "LABEL_ATTEMPT",
    "LABEL_JOB",
    "LABEL_JOB_UID",
    "LABEL_SWEEP",
    "PLURAL",
    "SWEEP_KIND",
    "SWEEP_PLURAL",
    "WORKER_CONTAINER",
]

API_GROUP = "kubetune.io"
API_VERSION = "v1alpha1"
KIND = "TrainableJob"
PLURAL = "trainablejobs"
SWEEP_KIND = "TrainableSweep"
SWEEP_PLURAL = "trainablesweeps"

LABEL_JOB = f"{API_GROUP}/job"
LABEL_JOB_UID = f"{API_GROUP}/job-uid"
LABEL_ATTEMPT = f"{API_GROUP}/attempt"
LABEL_SWEEP = f"{API_GROUP}/sweep"  # on a TrainableSweep's trials
WORKER_CONTAINER = "worker"
