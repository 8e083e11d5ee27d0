"""The TrainableSweep reconcile: the reconcile threads (workqueue.py) take sweep
keys from the sweeps' work queue and make each sweep's trials match its spec
and its scheduler's decisions; plan.py decides what, this module does it.

A sweep is reconciled when it or one of its trials changes (the trials are
TrainableJobs in the operator's cache), never on a timer of its own. The
scheduler's state is rebuilt at each reconcile by replaying the decisions
recorded on the trials, in the order they were made; a new decision is
written onto its trial (with the suspend that acts on it, in one patch)
before anything else happens, so a restarted operator replays the same
decisions and makes no second one. Results are read from S3 only when a
decision is due (a trial reached a rung or a perturbation point) and once
when a trial is done (its best value).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kubetune_contract import code_key
from kubetune_operator import kube, storageio
from kubetune_operator.cache import ClusterCache, JobKey
from kubetune_operator.metrics import SWEEP_RECONCILES
from kubetune_operator.model import JobView
from kubetune_operator.sweeps.plan import (
    ANN_BEST,
    ANN_DECISIONS,
    ANN_EXPLOIT,
    ANN_PAUSED,
    ANN_STOPPED,
    SweepStatus,
    Trial,
    best_result,
    build_trial,
    code_problem,
    count,
    members,
    never_reported,
    template_view,
    trial_name,
    trial_table,
    trial_view,
)
from kubetune_operator.sweeps.schedulers.base import Scheduler, SchedulerError
from kubetune_operator.sweeps.schedulers.registry import make_scheduler, validate
from kubetune_operator.workqueue import ReconcileThreads, WorkQueue

log = logging.getLogger("kubetune_operator")

TABLE_FILE = "trials.json"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Sweep:
    """One sweep as a reconcile sees it: read once, shared by its steps."""

    key: JobKey
    body: dict[str, Any]
    template: JobView  # the jobTemplate, named after the sweep: its folder and storage
    creds: dict[str, str] | None
    notes: list[str] = field(default_factory=list)  # trials found without the metric

    @property
    def spec(self) -> dict[str, Any]:
        return self.body["spec"]


class SweepController:
    def __init__(
        self,
        cache: ClusterCache,
        credentials: Callable[[JobView], dict[str, str] | None],
        workers: int = 2,
    ) -> None:
        self.cache = cache
        self.credentials = credentials
        self.queue: WorkQueue[JobKey] = WorkQueue()
        self.workers = workers
        self.reconcilers = ReconcileThreads(
            self.queue,
            self.reconcile,
            name="kubetune-sweep",
            what="sweep reconcile",
            counted=lambda outcome, _: SWEEP_RECONCILES.labels(outcome).inc(),
        )
        self._tables: dict[JobKey, str] = {}  # the trial table last written to S3
        self._memory: dict[JobKey, dict[str, Any]] = {}  # schedulers' in-memory notes

    def start(self) -> None:
        self.reconcilers.start(self.workers)

    def stop(self) -> None:
        self.queue.close()

    # one reconcile

    def reconcile(self, key: JobKey) -> float | None:
        body = self.cache.sweep(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        spec = body["spec"]
        status = SweepStatus.start(body, _now())
        if status.st.get("phase") in ("Succeeded", "Failed"):
            return None
        problem = validate(spec) or code_problem(template_view(body))
        if problem:
            status.phase("Failed", "InvalidSpec", problem)
            self._write_status(body, status.st)
            return None

        trials = [Trial.from_job(b) for b in self.cache.jobs_of_sweep(*key)]
        template = template_view(body)
        sweep = _Sweep(key, body, template, self.credentials(template))
        scheduler = make_scheduler(spec)

        trials = self._record_bests(sweep, trials)
        again = self._decide(sweep, scheduler, trials)
        if again is not None:
            return again  # a decision was written: decide the rest from the new state
        trials = [Trial.from_job(b) for b in self.cache.jobs_of_sweep(*key)]
        current = members(trials)
        total = scheduler.total

        failed = [t for t in current.values() if t.failed]
        limit = int(spec.get("maxFailedTrials", 0))
        if limit >= 0 and len(failed) > limit:
            self._pause_all(key[0], current, stopped="the sweep failed")
            last = failed[-1]
            why = f"{len(failed)} trials failed (maxFailedTrials={limit})"
            status.phase("Failed", "MaxFailedTrials", f"{why}; {last.name}: {last.failure}")
        elif spec.get("suspend"):
            self._pause_all(key[0], current)
            moving = [t for t in current.values() if t.active]
            if moving:
                status.phase("Running", "Suspending", f"suspending {len(moving)} trials")
            else:
                status.phase("Suspended", "Suspended", "every trial is suspended or done")
        else:
            try:
                self._resume_and_create(sweep, scheduler, current)
            except kube.Rejected as exc:
                status.phase("Failed", "InvalidSpec", f"jobTemplate: a trial was refused: {exc}")
                self._write_status(body, status.st)
                return None
            current = members([Trial.from_job(b) for b in self.cache.jobs_of_sweep(*key)])
            if len(current) >= total and all(t.done for t in current.values()):
                status.phase("Succeeded", "Finished", f"all {total} trials are done")
            else:
                status.phase("Running", "Running", "trials are running")

        status.st["trials"] = count(current, total).as_dict()
        status.results(trials, current, spec)
        # Every trial found without the metric, in one stable message.
        seen = self._memory.setdefault(key, {}).setdefault("notes", set())
        seen.update(sweep.notes)
        if seen:
            status.cond("MetricMissing", "True", "MetricMissing", "; ".join(sorted(seen))[:1024])
        self._write_status(body, status.st)
        self._write_table(sweep, trials)
        return None

    # the scheduler

    def _decide(self, sweep: _Sweep, scheduler: Scheduler, trials: list[Trial]) -> float | None:
        """Replays the recorded decisions, then makes the due ones; returns 0 when
        it wrote one (the caller decides the rest from the new state)."""
        recorded = sorted(((d[0], t, d) for t in trials for d in t.decisions), key=lambda x: x[0])
        for _, trial, decision in recorded:
            scheduler.replay(trial, decision)
        seq = recorded[-1][0] + 1 if recorded else 1
        current = members(trials)
        scheduler.set_members(current)
        scheduler.trials = trials
        scheduler.memory = self._memory.setdefault(sweep.key, {})
        read: dict[str, list[dict[str, Any]]] = {}

        def rows_of(t: Trial) -> list[dict[str, Any]]:
            if t.name not in read:
                read[t.name] = storageio.read_trial_results(
                    trial_view(sweep.template, t), sweep.creds
                )
            return read[t.name]

        scheduler.rows_of = rows_of
        # A PBT exploit recorded before its new generation was made: make it now.
        for trial in current.values():
            exploit = scheduler.pending_exploit(trial)
            if exploit is not None:
                self._create_generation(sweep, trial, exploit)
                return 0.0
        for trial in sorted(current.values(), key=lambda t: t.index):
            if trial.done or trial.suspend or not scheduler.due(trial):
                continue
            rows = rows_of(trial)
            try:
                made = scheduler.decide(trial, rows, seq)
            except SchedulerError as exc:
                sweep.notes.append(f"{trial.name} {exc}")
                continue
            if made is None:
                continue
            decision, stop_reason = made
            patch: dict[str, Any] = {
                "metadata": {
                    "annotations": {ANN_DECISIONS: json.dumps([*trial.decisions, decision])}
                }
            }
            if stop_reason:
                patch["metadata"]["annotations"][ANN_STOPPED] = stop_reason
                patch["spec"] = {"suspend": True}
                log.info("[%s/%s] %s: %s", sweep.key[0], trial.name, "stopping", stop_reason)
            self.cache.put_job(kube.patch_job(sweep.key[0], trial.name, patch))
            return 0.0
        return None

    def _record_bests(self, sweep: _Sweep, trials: list[Trial]) -> list[Trial]:
        """A trial that is done gets its best value from its result.json, once."""
        metric, mode = sweep.spec["metric"], sweep.spec["mode"]
        out = []
        for trial in trials:
            settled = trial.finished or (trial.stopped and trial.phase == "Suspended")
            if trial.best is None and settled:
                rows = storageio.read_trial_results(trial_view(sweep.template, trial), sweep.creds)
                best = best_result(rows, metric, mode)
                if rows and best["value"] is None:
                    sweep.notes.append(f"{trial.name} {never_reported(metric, sorted(rows[-1]))}")
                patch = {"metadata": {"annotations": {ANN_BEST: json.dumps(best)}}}
                body = kube.patch_job(sweep.template.namespace, trial.name, patch)
                self.cache.put_job(body)
                trial = Trial.from_job(body)
            out.append(trial)
        return out

    # creating, pausing, resuming

    def _create_trial(self, body: dict[str, Any], template: JobView) -> None:
        code = body["spec"].get("code")
        if code:
            # Shipped code (uploaded by kubetune.Tuner into the sweep's folder)
            # goes into the trial's own folder, the only place a worker reads it.
            source_uri = f"{template.run_uri}/{code_key(code['sha256'])}"
            if not storageio.copy_object(
                source_uri, code["uri"], template.storage, self.credentials(template)
            ):
                raise RuntimeError(f"could not copy the shipped code {source_uri} to {code['uri']}")
        created = kube.create_job(body)
        if created is not None:
            self.cache.put_job(created)

    def _create_generation(self, sweep: _Sweep, trial: Trial, exploit: dict[str, Any]) -> None:
        body = build_trial(
            sweep.body,
            trial.index,
            exploit["config"],
            generation=trial.generation + 1,
            restore_from=exploit["checkpoint"],
            annotations={ANN_EXPLOIT: json.dumps(exploit)},
        )
        self._create_trial(body, sweep.template)
        log.info(
            "[%s] PBT: %s continues from %s",
            body["metadata"]["name"],
            trial.name,
            exploit["checkpoint"],
        )

    def _resume_and_create(
        self, sweep: _Sweep, scheduler: Scheduler, current: dict[int, Trial]
    ) -> None:
        room = int(sweep.spec.get("maxConcurrent", 4)) - sum(t.active for t in current.values())
        for trial in sorted(current.values(), key=lambda t: t.index):
            if room <= 0:
                return
            if trial.paused and not trial.done:
                patch = {
                    "metadata": {"annotations": {ANN_PAUSED: None}},
                    "spec": {"suspend": False},
                }
                self.cache.put_job(kube.patch_job(sweep.key[0], trial.name, patch))
                room -= 1
        for index in range(scheduler.total):
            if room <= 0:
                return
            if index in current:
                continue
            body = build_trial(sweep.body, index, scheduler.config(index))
            self._create_trial(body, sweep.template)
            room -= 1

    def _pause_all(self, namespace: str, current: dict[int, Trial], stopped: str = "") -> None:
        for trial in current.values():
            if trial.done or trial.suspend:
                continue
            ann = {ANN_STOPPED: stopped} if stopped else {ANN_PAUSED: "true"}
            patch = {"metadata": {"annotations": ann}, "spec": {"suspend": True}}
            self.cache.put_job(kube.patch_job(namespace, trial.name, patch))

    # writing

    def _write_status(self, body: dict[str, Any], status: dict[str, Any]) -> None:
        if status == (body.get("status") or {}):
            return
        try:
            written = kube.replace_sweep_status(body, status)
        except kube.Conflict:
            self.queue.add((body["metadata"]["namespace"], body["metadata"]["name"]), 0.2)
            return
        self.cache.put_sweep(written)

    def _write_table(self, sweep: _Sweep, trials: list[Trial]) -> None:
        """The whole trial table (status keeps only the top), when it changed."""
        text = trial_table(sweep.key[1], sweep.spec["metric"], trials)
        if self._tables.get(sweep.key) == text:
            return
        storage = sweep.template.storage
        if storageio.write_object(
            sweep.template.run_uri, TABLE_FILE, text.encode(), storage, sweep.creds
        ):
            self._tables[sweep.key] = text

    def forget(self, key: JobKey) -> None:
        self._tables.pop(key, None)
        self._memory.pop(key, None)
        self.queue.discard(key)


__all__ = ["SweepController", "trial_name"]
