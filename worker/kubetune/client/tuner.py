"""`kubetune.Tuner`: Ray Tune's Tuner, run as a TrainableSweep on the cluster.

    tuner = tune.Tuner(MyTrainable, param_space={"lr": tune.loguniform(1e-4, 1e-1)},
                       tune_config=tune.TuneConfig(metric="acc", mode="max", num_samples=16,
                                                   scheduler=tune.schedulers.ASHAScheduler()),
                       run_config=tune.RunConfig(name="lr-search", storage_path="s3://b/sweeps",
                                                 stop={"training_iteration": 16}))
    best = tuner.fit().get_best_result()

A trainable the image cannot import is shipped by value as with
`kubetune.submit`: into the sweep's folder, from which the operator copies it
into each trial's own folder (the only place a worker unpickles from).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubetune.client.job import WATCH_RENEW_S, WaitTimeout
from kubetune.client.kube import Kube
from kubetune.client.submit import checkpoint_spec, resources_spec, upload_code
from kubetune.runtime import shipping
from kubetune.sdk.checkpoint_config import CheckpointConfig
from kubetune.sdk.checkpoint_handle import Checkpoint
from kubetune.sdk.errors import InvalidSettings, KubetuneError
from kubetune_contract import API_GROUP, API_VERSION, SWEEP_PLURAL


@dataclass
class TuneConfig:
    metric: str | None = None
    mode: str | None = None
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    scheduler: Any = None  # a kubetune.schedulers class
    search_alg: Any = None  # "random" or "grid" (Ray's BasicVariantGenerator)
    seed: int = 0  # kubetune: the searcher's seed (the same seed gives the same trials)
    max_failed_trials: int = 0


@dataclass
class RunConfig:
    name: str | None = None
    storage_path: str | None = None  # s3://BUCKET/PREFIX
    stop: Mapping[str, Any] | None = None
    checkpoint_config: CheckpointConfig | Mapping[str, Any] | None = None


class SweepFailed(KubetuneError):
    """The sweep ended Failed; reason and message are its status's."""


@dataclass
class Result:
    """One trial, shaped like Ray's Result."""

    metrics: dict[str, Any]
    config: dict[str, Any]
    checkpoint: Checkpoint | None
    path: str
    error: str | None = None
    name: str = ""


class ResultGrid:
    """The trials of a finished sweep, shaped like Ray's ResultGrid."""

    def __init__(self, results: list[Result], metric: str, mode: str, sweep: dict[str, Any]):
        self._results = results
        self._metric, self._mode = metric, mode
        self.sweep = sweep

    def __len__(self) -> int:
        return len(self._results)

    def __getitem__(self, i: int) -> Result:
        return self._results[i]

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self._results if r.error]

    def get_best_result(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> Result:
        """The best trial by its last result (scope="last", Ray's default) or by
        its best result (scope="all")."""
        metric, mode = metric or self._metric, mode or self._mode
        if scope not in ("last", "all"):
            raise InvalidSettings(f"scope={scope!r}: use 'last' or 'all'")

        def value(r: Result) -> float | None:
            raw = r.metrics.get(f"best_{metric}" if scope == "all" else metric)
            if scope == "all" and raw is None:
                raw = r.metrics.get(metric)
            return float(raw) if isinstance(raw, int | float) else None

        scored = [(v, r) for r in self._results if (v := value(r)) is not None]
        if not scored:
            raise KubetuneError(f"no trial reported {metric!r}")
        pick = max if mode == "max" else min
        return pick(scored, key=lambda x: x[0])[1]


class Tuner:
    def __init__(
        self,
        trainable: Any,
        *,
        param_space: Mapping[str, Any] | None = None,
        tune_config: TuneConfig | None = None,
        run_config: RunConfig | None = None,
        namespace: str | None = None,
        endpoint_url: str | None = None,
        storage_secret: str | None = None,
        resources: Mapping[str, Any] | None = None,
        image: str | None = None,
        labels: Mapping[str, str] | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
    ) -> None:
        self.trainable = trainable
        self.param_space = dict(param_space or {})
        self.tune_config = tune_config or TuneConfig()
        self.run_config = run_config or RunConfig()
        self.namespace = namespace
        self.endpoint_url = endpoint_url
        self.storage_secret = storage_secret
        self.resources = resources
        self.image = image
        self.labels = dict(labels or {})
        self._connection = (kubeconfig, context)
        self._kube: Kube | None = None

    @property
    def kube(self) -> Kube:
        """Connected on first use, so building the sweep needs no cluster."""
        if self._kube is None:
            self._kube = Kube.connect(*self._connection)
        return self._kube

    def _metric_mode(self) -> tuple[str, str]:
        tc, sched = self.tune_config, self.tune_config.scheduler
        metric = tc.metric or getattr(sched, "metric", None)
        mode = tc.mode or getattr(sched, "mode", None)
        if not metric or mode not in ("max", "min"):
            raise InvalidSettings(
                "TuneConfig(metric=..., mode='max'|'min') is needed: "
                "the sweep judges trials by them"
            )
        return str(metric), str(mode)

    def sweep_manifest(self, name: str, namespace: str) -> dict[str, Any]:
        rc, tc = self.run_config, self.tune_config
        storage = rc.storage_path
        if not storage or not storage.startswith("s3://"):
            raise InvalidSettings(
                f"RunConfig(storage_path={storage!r}): give an s3://BUCKET/PREFIX "
                "the trials write to"
            )
        metric, mode = self._metric_mode()
        template: dict[str, Any] = {"storage": {"uri": storage.rstrip("/")}}
        if self.endpoint_url:
            template["storage"]["endpointURL"] = self.endpoint_url
        if self.storage_secret:
            template["storage"]["secretRef"] = {"name": self.storage_secret}
        reference = (
            self.trainable
            if isinstance(self.trainable, str)
            else shipping.importable_name(self.trainable)
        )
        if reference is None:
            folder = f"{storage.rstrip('/')}/{namespace}/{name}"
            template["code"] = upload_code(self.trainable, folder, self.endpoint_url)
        else:
            template["trainable"] = reference
        optional = {
            "stop": dict(rc.stop) if rc.stop else None,
            "checkpoint": checkpoint_spec(rc.checkpoint_config),
            "resources": resources_spec(self.resources),
            "image": self.image,
        }
        template.update({k: v for k, v in optional.items() if v is not None})
        scheduler = tc.scheduler.to_spec() if tc.scheduler is not None else {"type": "fifo"}
        searcher = tc.search_alg if isinstance(tc.search_alg, str) else "random"
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "TrainableSweep",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "metric": metric,
                "mode": mode,
                "paramSpace": self.param_space,
                "numSamples": tc.num_samples,
                "maxConcurrent": tc.max_concurrent_trials or 4,
                "maxFailedTrials": tc.max_failed_trials,
                "searcher": {"type": searcher, "seed": tc.seed},
                "scheduler": scheduler,
                "jobTemplate": {"metadata": {"labels": self.labels}, "spec": template},
            },
        }

    def fit(self, timeout: float | None = None) -> ResultGrid:
        """Create the sweep, wait until it is finished (watching it), and return its trials."""
        namespace = self.namespace or self.kube.namespace
        name = self.run_config.name or f"tune-{int(time.time())}"
        manifest = self.sweep_manifest(name, namespace)
        self.kube.create_sweep(namespace, manifest)
        sweep = self._wait(namespace, name, timeout)
        status = sweep.get("status") or {}
        conds = status.get("conditions") or []
        failed: dict[str, Any] = next((c for c in conds if c.get("type") == "Failed"), {})
        if failed.get("status") == "True":
            raise SweepFailed(
                f"TrainableSweep {name} failed ({failed.get('reason')}): {failed.get('message')}"
            )
        metric, mode = self._metric_mode()
        return ResultGrid(self._results(namespace, name, metric), metric, mode, sweep)

    def _wait(self, namespace: str, name: str, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        body = self.kube.get_sweep(namespace, name)
        while (body.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(f"TrainableSweep {name} is not finished after {timeout:.0f}s")
            renew = WATCH_RENEW_S if left is None else min(WATCH_RENEW_S, max(1, int(left)))
            rv = body["metadata"]["resourceVersion"]
            for kind, new in self.kube.watch_job(namespace, name, rv, renew, plural=SWEEP_PLURAL):
                if kind in ("ADDED", "MODIFIED"):
                    body = new
                    break
            else:
                body = self.kube.get_sweep(namespace, name)
        return body

    def _results(self, namespace: str, name: str, metric: str) -> list[Result]:
        out = []
        for trial in sorted(self.kube.trials(namespace, name), key=lambda t: t["metadata"]["name"]):
            st = trial.get("status") or {}
            metrics = dict(st.get("lastResult") or {})
            best = (trial["metadata"].get("annotations") or {}).get("kubetune.io/sweep-best")
            if best:
                metrics[f"best_{metric}"] = json.loads(best).get("value")
            latest = (st.get("latestCheckpoint") or {}).get("path")
            storage = trial["spec"].get("storage") or {}
            conds = st.get("conditions") or []
            failed: dict[str, Any] = next((c for c in conds if c.get("type") == "Failed"), {})
            trial_name = trial["metadata"]["name"]
            out.append(
                Result(
                    metrics=metrics,
                    config=dict(trial["spec"].get("config") or {}),
                    checkpoint=Checkpoint(latest, endpoint_url=storage.get("endpointURL"))
                    if latest
                    else None,
                    path=f"{storage.get('uri', '').rstrip('/')}/{namespace}/{trial_name}",
                    error=failed.get("message") if failed.get("status") == "True" else None,
                    name=trial["metadata"]["name"],
                )
            )
        return out


__all__ = ["Result", "ResultGrid", "RunConfig", "SweepFailed", "TuneConfig", "Tuner"]
