"""kubetune's Python client: submit a Trainable to the cluster, wait on it,
suspend and resume it, follow its logs, read its results and checkpoints.

    import kubetune as tune
    job = tune.submit(MyTrainable, name="mnist-a", storage="s3://bucket/runs", ...)
    job.wait("Running"); job.suspend(); job.resume()
    job.wait()                  # Finished; raises tune.JobFailed with the reason
    df = job.results()
"""

from __future__ import annotations

from kubetune.client.job import Job, JobFailed, WaitTimeout
from kubetune.client.kube import ClusterError, Kube, NotFound
from kubetune.client.submit import submit
from kubetune.client.tuner import Result, ResultGrid, RunConfig, SweepFailed, TuneConfig, Tuner

__all__ = [
    "ClusterError",
    "Job",
    "JobFailed",
    "Kube",
    "NotFound",
    "Result",
    "ResultGrid",
    "RunConfig",
    "SweepFailed",
    "TuneConfig",
    "Tuner",
    "WaitTimeout",
    "submit",
]
