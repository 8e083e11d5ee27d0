"""`kubetune.Trainable`: Ray Tune's class API, method by method. Users fill the
hooks (setup, step, save_checkpoint, load_checkpoint, reset_config, cleanup);
the framework owns train, save, restore, reset and stop, and fills Ray's
result keys with Ray's rules. Where a trainable lives is
kubetune.sdk.storage_context; what save() writes and restore() reads,
kubetune.sdk.class_checkpoint; with_parameters, kubetune.sdk.with_parameters."""

from __future__ import annotations

import copy
import datetime
import logging
import os
import time
import warnings
from typing import Any

from kubetune.sdk.checkpoint_handle import Checkpoint, TrainingResult
from kubetune.sdk.class_checkpoint import (
    counter_metrics,
    load_saved,
    prepare_folder,
    restore_target,
    store_returned,
    write_manifest,
)
from kubetune.sdk.errors import StepResultError, describe
from kubetune.sdk.monitor import UtilMonitor
from kubetune.sdk.result_keys import (
    DEBUG_METRICS,
    DONE,
    EPISODES_THIS_ITER,
    EPISODES_TOTAL,
    RESULT_DUPLICATE,
    SHOULD_CHECKPOINT,
    STDERR_FILE,
    STDOUT_FILE,
    TIME_THIS_ITER_S,
    TIMESTEPS_THIS_ITER,
    TIMESTEPS_TOTAL,
    TRAINING_ITERATION,
    TRIAL_INFO,
    DateCache,
    HostFacts,
    TrialInfo,
)
from kubetune.sdk.storage_context import StorageContext, make_logdir
from kubetune.sdk.version import VERSION

logger = logging.getLogger("kubetune")

SETUP_TIME_THRESHOLD_S = 10


class Trainable:
    """Subclass it and fill the hooks; see Ray Tune's `Trainable` for the contract."""

    # Ray's counters (set by _reset_counters, restore and train).
    _iteration: int
    _time_total: Any
    _timesteps_total: Any
    _episodes_total: Any
    _time_since_restore: Any
    _timesteps_since_restore: Any
    _iterations_since_restore: int
    _restored: bool

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        storage: StorageContext | None = None,
        logger_creator: Any = None,
        remote_checkpoint_dir: Any = None,
        sync_config: Any = None,
    ) -> None:
        if logger_creator is not None or remote_checkpoint_dir is not None or sync_config:
            warnings.warn(
                "logger_creator, remote_checkpoint_dir and sync_config were removed in Ray 2.7 "
                "and are ignored: kubetune writes result.json and checkpoints to the run's storage",
                DeprecationWarning,
                stacklevel=2,
            )
        # The caller's dict itself (Ray pops its magic keys from it), not a copy.
        self.config: dict[str, Any] = config or {}
        info = self._pop_magic_keys(self.config)
        self._trial_info = info or TrialInfo()
        if storage is not None and not getattr(storage, "trial_fs_path", None):
            raise ValueError("storage.trial_fs_path must be set")
        self._storage = storage
        # Run by kubetune's loop (which commits what save() writes, manifest
        # and all) or by user code (then save() writes the manifest itself).
        # Trial info counts too: it reaches a subclass whose __init__ drops storage.
        self._in_run = storage is not None or info is not None
        self._logdir = self._make_logdir()
        self._reset_counters()
        self._last_result: dict[str, Any] | None = None
        self._date = DateCache()
        self._node_ip = HostFacts.node_ip()
        start = time.time()
        self.setup(copy.deepcopy(self.config))
        if time.time() - start > SETUP_TIME_THRESHOLD_S:
            logger.info(
                "setup() took %.1f s: keep slow loading out of the step loop", time.time() - start
            )
        self._monitor = UtilMonitor(start=bool(self.config.get("log_sys_usage", False)))

    # --- hooks a subclass overrides ----------------------------------------------
    def setup(self, config: dict[str, Any]) -> None:
        """Called once with a deep copy of the config; not called again by reset()."""

    def step(self) -> dict[str, Any]:
        """One iteration of training; returns a dict of metrics."""
        raise NotImplementedError(f"{type(self).__name__} must implement step()")

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any] | str | None:
        """Write state under checkpoint_dir, or return a dict to be pickled."""
        raise NotImplementedError(f"{type(self).__name__} must implement save_checkpoint()")

    def load_checkpoint(self, checkpoint: dict[str, Any] | str) -> None:
        """Receive the dict save_checkpoint returned, or the folder it wrote."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_checkpoint()")

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reconfigure in place and return True to allow reuse (see reset())."""
        return False

    def cleanup(self) -> None:
        """Release resources; called by stop()."""

    def log_result(self, result: dict[str, Any]) -> None:
        """Called by train() with every auto-filled result."""

    def _export_model(self, export_formats: list[str], export_dir: str) -> dict[str, Any]:
        return {}

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]) -> Any:
        return None

    @classmethod
    def resource_help(cls, config: dict[str, Any]) -> str:
        return ""

    # --- framework-owned --------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run one step and return its result with Ray's auto-filled keys."""
        start = time.time()
        result = self.step()
        if not isinstance(result, dict):
            raise StepResultError(
                f"step() needs to return a dict: {type(self).__name__}.step() returned "
                f"{describe(result)}; return a dict of metrics such as {{'loss': 0.1}}"
            )
        return self._complete(result, start)

    def _complete(self, result: dict[str, Any], start: float) -> dict[str, Any]:
        # The hot path of every iteration: no syscall, no strftime per call.
        if RESULT_DUPLICATE in result:
            return result
        result = result.copy()
        self._iteration += 1
        self._iterations_since_restore += 1
        now = time.time()
        given = result.get(TIME_THIS_ITER_S)
        time_this_iter = given if given is not None else now - start
        self._time_total += time_this_iter
        self._time_since_restore += time_this_iter
        result.setdefault(DONE, False)
        timesteps = result.get(TIMESTEPS_THIS_ITER)
        if timesteps is not None:
            self._timesteps_total = (self._timesteps_total or 0) + timesteps
            self._timesteps_since_restore += timesteps
        episodes = result.get(EPISODES_THIS_ITER)
        if episodes is not None:
            self._episodes_total = (self._episodes_total or 0) + episodes
        if self._timesteps_total is not None:
            result.setdefault(TIMESTEPS_TOTAL, self._timesteps_total)
        if self._episodes_total is not None:
            result.setdefault(EPISODES_TOTAL, self._episodes_total)
        result.setdefault(TRAINING_ITERATION, self._iteration)
        self._fill(result, now, time_this_iter)
        if self._monitor.started:
            result.update(self._monitor.get_data())
        self.log_result(result)
        self._last_result = result
        return result

    def _fill(self, result: dict[str, Any], now: float, time_this_iter: Any) -> None:
        second = int(now)
        timestamp = result.get("timestamp")
        result["trial_id"] = self._trial_info.trial_id
        result["date"] = self._date.format(second)
        result["timestamp"] = timestamp if timestamp else second
        result["time_this_iter_s"] = time_this_iter
        result["time_total_s"] = self._time_total
        result["pid"] = HostFacts.pid
        result["hostname"] = HostFacts.hostname
        result["node_ip"] = self._node_ip
        result["config"] = self.config
        result["time_since_restore"] = self._time_since_restore
        result["iterations_since_restore"] = self._iterations_since_restore
        if self._timesteps_since_restore:
            result["timesteps_since_restore"] = self._timesteps_since_restore

    def get_auto_filled_metrics(
        self,
        now: datetime.datetime | None = None,
        time_this_iter: float | None = None,
        timestamp: int | None = None,
        debug_metrics_only: bool = False,
    ) -> dict[str, Any]:
        """The block train() adds to every result (Ray's public helper)."""
        moment = (now or datetime.datetime.today()).timestamp()
        filled: dict[str, Any] = {"timestamp": timestamp}
        self._fill(filled, moment, time_this_iter)
        if debug_metrics_only:
            return {k: v for k, v in filled.items() if k in DEBUG_METRICS}
        return filled

    def train_buffered(
        self, buffer_time_s: float, max_buffer_length: int = 1000
    ) -> list[dict[str, Any]]:
        """train() at least once, then until done, should_checkpoint, a duplicate
        result, max_buffer_length results, or buffer_time_s elapsed (checked between
        calls). Ray's own caller swaps the two arguments; kubetune does not."""
        results: list[dict[str, Any]] = []
        deadline = time.monotonic() + buffer_time_s
        while True:
            result = self.train()
            results.append(result)
            if (
                result.get(DONE)
                or result.get(SHOULD_CHECKPOINT)
                or RESULT_DUPLICATE in result
                or len(results) >= max_buffer_length
                or time.monotonic() >= deadline
            ):
                return results

    def save(self, checkpoint_dir: str | None = None) -> TrainingResult:
        """Call save_checkpoint into checkpoint_dir (default: a new temporary folder)
        and return the checkpoint with the metrics of the last result. Called by
        user code (not by kubetune's loop, which commits the folder itself), it
        also writes the manifest a committed checkpoint carries, last, so that
        restore(path) continues the counters."""
        target = prepare_folder(checkpoint_dir, in_run=self._in_run)
        store_returned(target, self.save_checkpoint(target))
        metrics = dict(self._last_result) if self._last_result else {}
        if not self._in_run:
            self._write_manifest(target)
        return TrainingResult(Checkpoint.from_directory(target), metrics)

    def _write_manifest(self, folder: str) -> None:
        """The manifest the loop would commit with folder (class_checkpoint.write_manifest)."""
        write_manifest(folder, self._iteration, self._counter_metrics())

    def _counter_metrics(self) -> dict[str, Any]:
        """The last result with this object's counters (class_checkpoint.counter_metrics)."""
        return counter_metrics(
            self._last_result,
            self._iteration,
            self._time_total,
            self._timesteps_total,
            self._episodes_total,
        )

    def restore(
        self, checkpoint_path: str | os.PathLike[str] | Checkpoint | TrainingResult
    ) -> None:
        """Load a checkpoint. Counters come from the result's metrics; for a bare path
        or Checkpoint, from its kubetune manifest when it has one (else they restart
        at 0, as in Ray 2.60)."""
        checkpoint, metrics = restore_target(checkpoint_path)
        if checkpoint is None:
            raise ValueError("restore() got a result without a checkpoint: nothing to load")
        self._iteration = metrics.get(TRAINING_ITERATION, 0)
        self._time_total = metrics.get("time_total_s", 0)
        self._timesteps_total = metrics.get(TIMESTEPS_TOTAL)
        self._episodes_total = metrics.get(EPISODES_TOTAL)
        self._time_since_restore = 0.0
        self._iterations_since_restore = 0
        self._timesteps_since_restore = 0
        if checkpoint.is_local and not os.path.isdir(checkpoint.path):
            raise ValueError(
                "Could not recover from checkpoint as it does not exist on storage anymore: "
                f"{checkpoint.path}; pass the path of an existing checkpoint folder"
            )
        self._load(checkpoint)
        self._restored = True
        logger.info("Restored on %s from checkpoint: %s", self._node_ip, checkpoint)

    def _load(self, checkpoint: Checkpoint) -> None:
        load_saved(checkpoint, self.load_checkpoint)

    def reset(self, new_config: dict[str, Any], storage: StorageContext | None = None) -> bool:
        """Reuse this object for another config: True when reset_config() said so."""
        self.config = new_config
        self._storage = storage
        info = self._pop_magic_keys(new_config)
        if info is not None:
            self._trial_info = info
        self._in_run = self._in_run or storage is not None or info is not None
        self._logdir = self._make_logdir()
        if not self.reset_config(new_config):
            return False
        self._reset_counters()
        return True

    def stop(self) -> None:
        """Stop the usage monitor and call cleanup()."""
        self._monitor.stop()
        self.cleanup()

    def export_model(
        self, export_formats: list[str] | str, export_dir: str | None = None
    ) -> dict[str, Any]:
        formats = [export_formats] if isinstance(export_formats, str) else list(export_formats)
        return self._export_model(formats, export_dir or self.logdir)

    # --- state and properties ---------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return self.config

    def get_state(self) -> dict[str, Any]:

        return {
            "iteration": self._iteration,
            "timesteps_total": self._timesteps_total,
            "time_total": self._time_total,
            "episodes_total": self._episodes_total,
            "last_result": self._last_result,
            "ray_version": None,
            "kubetune_version": VERSION,
        }

    def get_current_ip_pid(self) -> tuple[str, int]:
        return self._node_ip, os.getpid()

    def is_actor(self) -> bool:
        return False

    @property
    def iteration(self) -> int:
        """Completed train() calls since construction, restore or reset."""
        return self._iteration

    @property
    def training_iteration(self) -> int:
        return self._iteration

    @property
    def logdir(self) -> str:
        return self._logdir

    @property
    def trial_name(self) -> str:
        return self._trial_info.trial_name

    @property
    def trial_id(self) -> str:
        return self._trial_info.trial_id

    @property
    def trial_resources(self) -> Any:
        return self._trial_info.trial_resources

    def save_to_object(self) -> Any:
        raise DeprecationWarning(
            "Trainable.save_to_object() was removed in Ray 2.7: use save() and restore()"
        )

    def restore_from_object(self, obj: Any) -> None:
        raise DeprecationWarning(
            "Trainable.restore_from_object() was removed in Ray 2.7: use save() and restore()"
        )

    # --- internals --------------------------------------------------------------
    def _reset_counters(self) -> None:
        self._iteration = 0
        self._time_total = 0.0
        self._timesteps_total = None
        self._episodes_total = None
        self._time_since_restore = 0.0
        self._timesteps_since_restore = 0
        self._iterations_since_restore = 0
        self._restored = False

    @staticmethod
    def _pop_magic_keys(config: dict[str, Any]) -> Any:
        config.pop(STDOUT_FILE, None)
        config.pop(STDERR_FILE, None)
        return config.pop(TRIAL_INFO, None)

    def _make_logdir(self) -> str:
        return make_logdir(self._storage)


def implements_save(cls: type[Trainable]) -> bool:
    """Whether a Trainable subclass overrides save_checkpoint (can checkpoint at all)."""
    return getattr(cls, "save_checkpoint", None) is not Trainable.save_checkpoint
