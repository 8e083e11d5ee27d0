"""What a TrainableSweep should look like, decided from the sweep and its trials
alone (pure): the trials as the sweep sees them and the trial it builds,
whether its shipped code may be used, each trial's best result, the sweep's
status and its trial table. controller.py does the I/O.

Trials are child TrainableJobs named `<sweep>-t<4-digit index>` (PBT
generations `-g<n>`), labelled with the sweep and their index, owned by the
sweep. Everything the sweep needs to go on after an operator restart is in
those objects: the scheduler's decisions are annotations on the trials,
written before they are acted on.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubetune_contract import API_GROUP, API_VERSION, LABEL_SWEEP, code_uri, is_within_run
from kubetune_operator.conditions import get_condition, set_condition
from kubetune_operator.model import Cond, JobView

LABEL_TRIAL = f"{API_GROUP}/sweep-trial"  # the trial's index in the sweep
LABEL_GENERATION = f"{API_GROUP}/sweep-generation"  # PBT: 0, 1, ...
# Scheduler decisions recorded on a trial: a JSON list of [seq, time, value].
ANN_DECISIONS = f"{API_GROUP}/sweep-decisions"
# Why the scheduler stopped a trial (set with spec.suspend=true, in one patch).
ANN_STOPPED = f"{API_GROUP}/sweep-stopped"
# The sweep's own suspend (undone when the sweep resumes).
ANN_PAUSED = f"{API_GROUP}/sweep-paused"
# A finished trial's best result, read once from its result.json: {value, iteration}.
ANN_BEST = f"{API_GROUP}/sweep-best"
# PBT: the exploit that made this generation: {seq, donor, checkpoint, config}.
ANN_EXPLOIT = f"{API_GROUP}/sweep-exploit"

TOP_TRIALS = 10
SWEEP_KIND = "TrainableSweep"


def trial_name(sweep: str, index: int, generation: int = 0) -> str:
    base = f"{sweep}-t{index:04d}"
    return base if generation == 0 else f"{base}-g{generation}"


@dataclass(frozen=True)
class Trial:
    """One trial job as the sweep sees it."""

    name: str
    index: int
    generation: int
    phase: str
    suspend: bool
    iteration: int
    config: dict[str, Any]
    last_result: dict[str, Any]
    latest_checkpoint: str
    checkpoints: list[dict[str, Any]]
    decisions: list[list[Any]]
    stopped: str
    paused: bool
    best: dict[str, Any] | None
    exploit: dict[str, Any] | None
    failure: str = ""

    @classmethod
    def from_job(cls, body: dict[str, Any]) -> Trial:
        meta = body.get("metadata") or {}
        labels = meta.get("labels") or {}
        ann = meta.get("annotations") or {}
        spec = body.get("spec") or {}
        st = body.get("status") or {}
        failed = get_condition(st.get("conditions") or [], Cond.FAILED) or {}
        return cls(
            name=meta.get("name") or "",
            index=int(labels.get(LABEL_TRIAL) or 0),
            generation=int(labels.get(LABEL_GENERATION) or 0),
            phase=st.get("phase") or "",
            suspend=bool(spec.get("suspend")),
            iteration=int(st.get("iteration") or 0),
            config=dict(spec.get("config") or {}),
            last_result=dict(st.get("lastResult") or {}),
            latest_checkpoint=(st.get("latestCheckpoint") or {}).get("path") or "",
            checkpoints=list(st.get("checkpoints") or []),
            decisions=_json(ann.get(ANN_DECISIONS), []),
            stopped=ann.get(ANN_STOPPED) or "",
            paused=ann.get(ANN_PAUSED) == "true",
            best=_json(ann.get(ANN_BEST), None),
            exploit=_json(ann.get(ANN_EXPLOIT), None),
            failure=failed.get("message") or "" if failed.get("status") == "True" else "",
        )

    @property
    def succeeded(self) -> bool:
        return self.phase == "Succeeded"

    @property
    def failed(self) -> bool:
        return self.phase == "Failed"

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def replaced(self) -> bool:
        """A PBT generation that a newer generation of the same member replaced."""
        return self.stopped.startswith("pbt:")

    @property
    def done(self) -> bool:
        """Nothing more will come of it: finished, or stopped by the scheduler."""
        return self.finished or bool(self.stopped)

    @property
    def active(self) -> bool:
        """Counts against maxConcurrent: it may run a worker pod (a stopping one too)."""
        return not self.finished and not (self.suspend and self.phase == "Suspended")


def _json(raw: str | None, default: Any) -> Any:
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return default


def members(trials: list[Trial]) -> dict[int, Trial]:
    """The newest generation of each trial index (PBT keeps the older ones suspended)."""
    out: dict[int, Trial] = {}
    for t in sorted(trials, key=lambda t: (t.index, t.generation)):
        out[t.index] = t
    return out


def template_view(sweep: dict[str, Any]) -> JobView:
    """The sweep's jobTemplate as a job named after the sweep (its storage and
    Secret: what reading and writing the sweep's folder needs)."""
    meta, spec = sweep["metadata"], sweep["spec"]["jobTemplate"]["spec"]
    return JobView.from_body({"metadata": meta, "spec": spec})


def trial_view(template: JobView, trial: Trial) -> JobView:
    """A trial as a job of the template's spec: its folder and storage (what
    reading its results needs)."""
    meta = {"name": trial.name, "namespace": template.namespace}
    return JobView.from_body({"metadata": meta, "spec": template.spec})


def code_problem(template: JobView) -> str:
    """Why the shipped code (jobTemplate.spec.code, uploaded by kubetune.Tuner)
    may not be used: it is not inside the sweep's own folder; "" when it is."""
    code = template.spec.get("code")
    if not code:
        return ""
    folder = template.run_uri  # the template is named after the sweep
    if is_within_run(folder, str(code.get("uri") or "")):
        return ""
    return (
        f"jobTemplate.spec.code.uri {code.get('uri')} is outside the sweep's folder: shipped "
        f"code must be at {folder}/.kubetune/code/<sha256>.pkl (kubetune.Tuner puts it there)"
    )


def build_trial(
    sweep: dict[str, Any],
    index: int,
    config: dict[str, Any],
    *,
    generation: int = 0,
    restore_from: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainableJob of one trial: the template's spec with this config."""
    meta = sweep["metadata"]
    template = sweep["spec"]["jobTemplate"]
    tmeta = template.get("metadata") or {}
    spec = copy.deepcopy(template.get("spec") or {})
    spec["config"] = config
    spec.pop("suspend", None)
    if spec.get("code"):
        # Shipped code is copied into each trial's own folder (the only place a
        # worker unpickles from); the sweep controller copies it before creating.
        folder = f"{spec['storage']['uri'].rstrip('/')}/{meta.get('namespace') or 'default'}"
        name = trial_name(meta["name"], index, generation)
        spec["code"] = {**spec["code"], "uri": code_uri(f"{folder}/{name}", spec["code"]["sha256"])}
    if restore_from:
        spec["restoreFrom"] = restore_from
    labels = {
        **(tmeta.get("labels") or {}),
        LABEL_SWEEP: meta["name"],
        LABEL_TRIAL: str(index),
        LABEL_GENERATION: str(generation),
    }
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "TrainableJob",
        "metadata": {
            "name": trial_name(meta["name"], index, generation),
            "namespace": meta.get("namespace") or "default",
            "labels": labels,
            "annotations": {**(tmeta.get("annotations") or {}), **(annotations or {})},
            "ownerReferences": [
                {
                    "apiVersion": f"{API_GROUP}/{API_VERSION}",
                    "kind": SWEEP_KIND,
                    "name": meta["name"],
                    "uid": meta.get("uid") or "",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


@dataclass
class Counts:
    total: int = 0
    created: int = 0
    pending: int = 0
    running: int = 0
    suspended: int = 0
    stopped: int = 0
    succeeded: int = 0
    failed: int = 0
    done: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def count(current: dict[int, Trial], total: int) -> Counts:
    c = Counts(total=total, created=len(current))
    for t in current.values():
        if t.succeeded:
            c.succeeded += 1
        elif t.failed:
            c.failed += 1
        elif t.stopped:
            c.stopped += 1
        elif t.phase == "Suspended" or t.suspend:
            c.suspended += 1
        elif t.phase == "Pending" or not t.phase:
            c.pending += 1
        else:
            c.running += 1
        if t.done:
            c.done += 1
    return c


def never_reported(metric: str, keys: list[str]) -> str:
    """The words for results without the metric, the same wherever they are found."""
    return f"never reported {metric!r} (its results have {keys})"


def best_result(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """A done trial's best result, judged on all its rows: {value, iteration},
    or {value: None} when no row has the metric as a number."""
    scored = [
        (float(r[metric]), int(r.get("training_iteration") or 0))
        for r in rows
        if isinstance(r.get(metric), int | float) and not isinstance(r.get(metric), bool)
    ]
    if not scored:
        return {"value": None}
    value, iteration = (max if mode == "max" else min)(scored, key=lambda s: s[0])
    return {"value": value, "iteration": iteration}


def trial_table(sweep: str, metric: str, trials: list[Trial]) -> str:
    """The whole trial table, as the sweep's folder keeps it (status keeps
    only the top); it changes when a trial starts or is done, not at every
    report."""
    table = [
        {
            "trial": t.name,
            "index": t.index,
            "generation": t.generation,
            "phase": t.phase if t.done else "Active",
            "config": t.config,
            "best": t.best,
            "stopped": t.stopped,
            **(
                {"iteration": t.iteration, "last_result": t.last_result,
                 "checkpoint": t.latest_checkpoint}
                if t.done else {}
            ),
        }
        for t in sorted(trials, key=lambda t: (t.index, t.generation))
    ]  # fmt: skip
    return json.dumps({"sweep": sweep, "metric": metric, "trials": table}, indent=1)


def value_of(trial: Trial, metric: str) -> tuple[float, int] | None:
    """(best value, its iteration) of a trial: read from result.json once it is
    done, else its last reported result (the best is judged on all results)."""
    if trial.best is not None and trial.best.get("value") is not None:
        return float(trial.best["value"]), int(trial.best.get("iteration") or 0)
    value = trial.last_result.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value), trial.iteration


def ranking(trials: list[Trial], metric: str, mode: str) -> list[tuple[float, int, Trial]]:
    scored = [(v[0], v[1], t) for t in trials if (v := value_of(t, metric)) is not None]
    scored.sort(key=lambda x: x[0], reverse=(mode == "max"))
    return scored


@dataclass
class SweepStatus:
    """Builds the sweep's status from what it had; written once per reconcile."""

    generation: int
    now: str
    st: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, sweep: dict[str, Any], now: str) -> SweepStatus:
        gen = int((sweep.get("metadata") or {}).get("generation") or 0)
        out = cls(gen, now, copy.deepcopy(sweep.get("status") or {}))
        if not out.st.get("conditions"):
            out.st["conditions"] = []
            for ctype in (Cond.RUNNING, Cond.SUSPENDED, Cond.COMPLETE, Cond.FAILED, Cond.FINISHED):
                out.cond(ctype, "False", "Initializing", "")
        out.st["observedGeneration"] = gen
        return out

    def cond(self, ctype: str, status: str, reason: str, message: str) -> None:
        self.st["conditions"] = set_condition(
            self.st.get("conditions") or [], ctype, status, reason, message,
            generation=self.generation, now=self.now,
        )  # fmt: skip

    def phase(self, phase: str, reason: str, message: str) -> None:
        self.st["phase"] = phase
        self.cond(Cond.RUNNING, "True" if phase == "Running" else "False", reason, message)
        self.cond(Cond.SUSPENDED, "True" if phase == "Suspended" else "False", reason, message)
        if phase in ("Succeeded", "Failed"):
            ok = phase == "Succeeded"
            self.cond(Cond.COMPLETE if ok else Cond.FAILED, "True", reason, message)
            self.cond(Cond.FINISHED, "True", reason, message)
            self.st.setdefault("completionTime", self.now)

    def results(
        self, all_trials: list[Trial], current: dict[int, Trial], spec: dict[str, Any]
    ) -> None:
        metric, mode = spec["metric"], spec["mode"]
        ranked = ranking(all_trials, metric, mode)
        if ranked:
            value, iteration, t = ranked[0]
            self.st["best"] = {
                "trial": t.name,
                "value": value,
                "iteration": iteration,
                "config": t.config,
                "checkpoint": t.latest_checkpoint,
            }
        self.st["top"] = [
            {"trial": t.name, "value": v, "iteration": i, "phase": t.phase}
            for v, i, t in ranked[:TOP_TRIALS]
        ]
