"""The TrainableSweep reconcile: threads take sweep keys from a work queue and
make each sweep's trials match its spec and its scheduler's decisions.

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
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kubetune_contract import code_key, is_within_run
from kubetune_operator import kube, storageio
from kubetune_operator.cache import ClusterCache, JobKey
from kubetune_operator.metrics import SWEEP_RECONCILES
from kubetune_operator.model import JobView
from kubetune_operator.sweep_plan import (
    ANN_BEST,
    ANN_DECISIONS,
    ANN_EXPLOIT,
    ANN_PAUSED,
    ANN_STOPPED,
    SweepStatus,
    Trial,
    build_trial,
    count,
    members,
    template_view,
    trial_name,
)
from kubetune_operator.sweep_schedulers import Scheduler, SchedulerError, make_scheduler, validate
from kubetune_operator.workqueue import WorkQueue

log = logging.getLogger("kubetune_operator")

TABLE_FILE = "trials.json"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self._stop = threading.Event()
        self._tables: dict[JobKey, str] = {}  # the trial table last written to S3
        self._memory: dict[JobKey, dict[str, Any]] = {}  # schedulers' in-memory notes

    def start(self) -> None:
        for i in range(self.workers):
            threading.Thread(target=self._work, name=f"kubetune-sweep-{i}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self.queue.close()

    def _work(self) -> None:
        while not self._stop.is_set():
            key = self.queue.get()
            if key is None:
                return
            try:
                again = self.reconcile(key)
            except Exception as exc:  # never let one sweep stop a thread
                delay = self.queue.retry_later(key)
                SWEEP_RECONCILES.labels("error").inc()
                log.warning(
                    "[%s/%s] sweep reconcile failed, retrying in %.1fs: %s", *key, delay, exc
                )
            else:
                self.queue.forget(key)
                SWEEP_RECONCILES.labels("ok").inc()
                if again is not None:
                    self.queue.add(key, again)
            finally:
                self.queue.done(key)

    # one reconcile

    def reconcile(self, key: JobKey) -> float | None:
        body = self.cache.sweep(key)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        spec = body["spec"]
        status = SweepStatus.start(body, _now())
        if status.st.get("phase") in ("Succeeded", "Failed"):
            return None
        problem = validate(spec) or self._code_problem(key, spec)
        if problem:
            status.phase("Failed", "InvalidSpec", problem)
            self._write_status(body, status.st)
            return None

        trials = [Trial.from_job(b) for b in self.cache.jobs_of_sweep(*key)]
        template = template_view(body)
        creds = self.credentials(template)
        scheduler = make_scheduler(spec)
        notes: list[str] = []

        trials = self._record_bests(trials, spec, template, creds, notes)
        again = self._decide(key, body, scheduler, trials, template, creds, notes)
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
                self._resume_and_create(key, body, scheduler, current)
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
        seen.update(notes)
        if seen:
            status.cond("MetricMissing", "True", "MetricMissing", "; ".join(sorted(seen))[:1024])
        self._write_status(body, status.st)
        self._write_table(key, spec, template, creds, trials)
        return None

    # shipped code (jobTemplate.spec.code, uploaded by kubetune.Tuner)

    def _sweep_folder(self, key: JobKey, spec: dict[str, Any]) -> str:
        uri = str(spec["jobTemplate"]["spec"]["storage"]["uri"]).rstrip("/")
        return f"{uri}/{key[0]}/{key[1]}"

    def _code_problem(self, key: JobKey, spec: dict[str, Any]) -> str:
        code = spec["jobTemplate"]["spec"].get("code")
        if not code:
            return ""
        folder = self._sweep_folder(key, spec)
        if is_within_run(folder, str(code.get("uri") or "")):
            return ""
        return (
            f"jobTemplate.spec.code.uri {code.get('uri')} is outside the sweep's folder: shipped "
            f"code must be at {folder}/.kubetune/code/<sha256>.pkl (kubetune.Tuner puts it there)"
        )

    def _create_trial(self, key: JobKey, body: dict[str, Any], template: JobView) -> None:
        code = body["spec"].get("code")
        if code:
            source = self._sweep_folder(key, {"jobTemplate": {"spec": template.spec}})
            source_uri = f"{source}/{code_key(code['sha256'])}"
            if not storageio.copy_object(
                source_uri, code["uri"], template.storage, self.credentials(template)
            ):
                raise RuntimeError(f"could not copy the shipped code {source_uri} to {code['uri']}")
        created = kube.create_job(body)
        if created is not None:
            self.cache.put_job(created)

    # the scheduler

    def _decide(
        self,
        key: JobKey,
        sweep: dict[str, Any],
        scheduler: Scheduler,
        trials: list[Trial],
        template: JobView,
        creds: dict[str, str] | None,
        notes: list[str],
    ) -> float | None:
        """Replays the recorded decisions, then makes the due ones; returns 0 when
        it wrote one (the caller decides the rest from the new state)."""
        recorded = sorted(((d[0], t, d) for t in trials for d in t.decisions), key=lambda x: x[0])
        for _, trial, decision in recorded:
            scheduler.replay(trial, decision)
        seq = recorded[-1][0] + 1 if recorded else 1
        current = members(trials)
        scheduler.set_members(current)
        scheduler.trials = trials
        scheduler.memory = self._memory.setdefault(key, {})
        read: dict[str, list[dict[str, Any]]] = {}

        def rows_of(t: Trial) -> list[dict[str, Any]]:
            if t.name not in read:
                view = self._trial_view(key, t, template)
                read[t.name] = storageio.read_trial_results(view, creds)
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
                notes.append(f"{trial.name} {exc}")
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
                log.info("[%s/%s] %s: %s", key[0], trial.name, "stopping", stop_reason)
            self.cache.put_job(kube.patch_job(key[0], trial.name, patch))
            return 0.0
        return None

    def _create_generation(
        self, sweep: dict[str, Any], trial: Trial, exploit: dict[str, Any]
    ) -> None:
        body = build_trial(
            sweep,
            trial.index,
            exploit["config"],
            generation=trial.generation + 1,
            restore_from=exploit["checkpoint"],
            annotations={ANN_EXPLOIT: json.dumps(exploit)},
        )
        key = (body["metadata"]["namespace"], sweep["metadata"]["name"])
        self._create_trial(key, body, template_view(sweep))
        log.info(
            "[%s] PBT: %s continues from %s",
            body["metadata"]["name"],
            trial.name,
            exploit["checkpoint"],
        )

    def _trial_view(self, key: JobKey, trial: Trial, template: JobView) -> JobView:
        return JobView.from_body(
            {"metadata": {"name": trial.name, "namespace": key[0]}, "spec": template.spec}
        )

    def _record_bests(
        self,
        trials: list[Trial],
        spec: dict[str, Any],
        template: JobView,
        creds: dict[str, str] | None,
        notes: list[str],
    ) -> list[Trial]:
        """A trial that is done gets its best value from its result.json, once."""
        metric, mode = spec["metric"], spec["mode"]
        out = []
        for trial in trials:
            settled = trial.finished or (trial.stopped and trial.phase == "Suspended")
            if trial.best is None and settled:
                ns = template.namespace
                rows = storageio.read_trial_results(
                    self._trial_view((ns, ""), trial, template), creds
                )
                scored = [
                    (float(r[metric]), int(r.get("training_iteration") or 0))
                    for r in rows
                    if isinstance(r.get(metric), int | float)
                    and not isinstance(r.get(metric), bool)
                ]
                if rows and not scored:
                    keys = sorted(rows[-1])
                    notes.append(
                        f"{trial.name} never reported {metric!r} (its results have {keys})"
                    )
                best = (
                    (max if mode == "max" else min)(scored, key=lambda s: s[0]) if scored else None
                )
                value = {"value": best[0], "iteration": best[1]} if best else {"value": None}
                patch = {"metadata": {"annotations": {ANN_BEST: json.dumps(value)}}}
                body = kube.patch_job(ns, trial.name, patch)
                self.cache.put_job(body)
                trial = Trial.from_job(body)
            out.append(trial)
        return out

    # creating, pausing, resuming

    def _resume_and_create(
        self, key: JobKey, sweep: dict[str, Any], scheduler: Scheduler, current: dict[int, Trial]
    ) -> None:
        spec = sweep["spec"]
        room = int(spec.get("maxConcurrent", 4)) - sum(t.active for t in current.values())
        for trial in sorted(current.values(), key=lambda t: t.index):
            if room <= 0:
                return
            if trial.paused and not trial.done:
                patch = {
                    "metadata": {"annotations": {ANN_PAUSED: None}},
                    "spec": {"suspend": False},
                }
                self.cache.put_job(kube.patch_job(key[0], trial.name, patch))
                room -= 1
        for index in range(scheduler.total):
            if room <= 0:
                return
            if index in current:
                continue
            body = build_trial(sweep, index, scheduler.config(index))
            self._create_trial(key, body, template_view(sweep))
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

    def _write_table(
        self,
        key: JobKey,
        spec: dict[str, Any],
        template: JobView,
        creds: dict[str, str] | None,
        trials: list[Trial],
    ) -> None:
        """The whole trial table (status keeps only the top), when it changed."""
        # Rewritten when a trial starts or is done, not at every report.
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
        text = json.dumps({"sweep": key[1], "metric": spec["metric"], "trials": table}, indent=1)
        if self._tables.get(key) == text:
            return
        uri = f"{template.storage.get('uri', '').rstrip('/')}/{key[0]}/{key[1]}"
        if storageio.write_object(uri, TABLE_FILE, text.encode(), template.storage, creds):
            self._tables[key] = text

    def forget(self, key: JobKey) -> None:
        self._tables.pop(key, None)
        self._memory.pop(key, None)
        self.queue.discard(key)


__all__ = ["SweepController", "trial_name"]
