"""Ray Tune's result key names and the cheap host facts the auto-filled keys
need, cached so that filling a result costs no syscall per iteration."""

from __future__ import annotations

import os
import platform
import socket
import time
from dataclasses import dataclass, field
from typing import Any

# Ray's magic strings (ray/tune/result.py, ray/air/constants.py).
DONE = "done"
SHOULD_CHECKPOINT = "should_checkpoint"
TRAINING_ITERATION = "training_iteration"
TIME_THIS_ITER_S = "time_this_iter_s"
TIME_TOTAL_S = "time_total_s"
TIMESTAMP = "timestamp"
TIMESTEPS_THIS_ITER = "timesteps_this_iter"
TIMESTEPS_TOTAL = "timesteps_total"
EPISODES_THIS_ITER = "episodes_this_iter"
EPISODES_TOTAL = "episodes_total"
TRIAL_ID = "trial_id"
HOSTNAME = "hostname"
NODE_IP = "node_ip"
PID = "pid"
DATE = "date"
CONFIG = "config"
TIME_SINCE_RESTORE = "time_since_restore"
TIMESTEPS_SINCE_RESTORE = "timesteps_since_restore"
ITERATIONS_SINCE_RESTORE = "iterations_since_restore"
EXPERIMENT_TAG = "experiment_tag"
DEFAULT_METRIC = "_metric"
RESULT_DUPLICATE = "__duplicate__"
TRIAL_INFO = "__trial_info__"
STDOUT_FILE = "__stdout_file__"
STDERR_FILE = "__stderr_file__"
CHECKPOINT_DIR_NAME = "checkpoint_dir_name"
DEBUG_METRICS = (TRIAL_ID, "experiment_id", DATE, TIMESTAMP, PID, HOSTNAME, NODE_IP, CONFIG)

# The keys every result carries whatever the trainable returns; the rest are the
# trainable's own metrics (used to pick what a progress line shows first).
AUTO_FILLED_KEYS = frozenset(
    {
        DONE,
        TRAINING_ITERATION,
        TIME_THIS_ITER_S,
        TIME_TOTAL_S,
        TIMESTAMP,
        TIMESTEPS_TOTAL,
        EPISODES_TOTAL,
        TRIAL_ID,
        HOSTNAME,
        NODE_IP,
        PID,
        DATE,
        CONFIG,
        TIME_SINCE_RESTORE,
        TIMESTEPS_SINCE_RESTORE,
        ITERATIONS_SINCE_RESTORE,
        CHECKPOINT_DIR_NAME,
        SHOULD_CHECKPOINT,
        "perf",
    }
)


@dataclass
class TrialInfo:
    """What Ray passes as config["__trial_info__"]; kubetune fills it from the run."""

    experiment_name: str = "default"
    trial_name: str = "default"
    trial_id: str = "default"
    trial_resources: Any = None
    logdir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _node_ip() -> str:
    """The address other hosts reach us at: the pod IP when Kubernetes gives it,
    else the source address of a route to a public address (no packet is sent)."""
    ip = os.environ.get("POD_IP") or os.environ.get("KUBETUNE_NODE_IP")
    if ip:
        return ip
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class HostFacts:
    """pid, hostname and node IP, looked up once (getpid is a syscall on recent
    glibc) and refreshed in a forked child."""

    pid: int = os.getpid()
    hostname: str = platform.node()
    _node_ip: str | None = None

    @classmethod
    def node_ip(cls) -> str:
        if cls._node_ip is None:
            cls._node_ip = _node_ip()
        return cls._node_ip

    @classmethod
    def _after_fork(cls) -> None:
        cls.pid = os.getpid()


os.register_at_fork(after_in_child=HostFacts._after_fork)


class DateCache:
    """Ray's `date` key (`%Y-%m-%d_%H-%M-%S`, local time), formatted once per second:
    strftime costs more than the rest of a result's bookkeeping."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def format(self, second: int) -> str:
        if second != self._second:
            self._text = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(second))
            self._second = second
        return self._text


def flatten(result: dict[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """Nested dicts joined with "/" ("perf/cpu_util_percent"), as Ray's loggers and
    stop criteria see a result."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + sep, sep))
        else:
            out[name] = value
    return out


def lookup(result: dict[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of key in result, where "a/b" also finds result["a"]["b"] (and
    partly flattened forms), as Ray matches keys against the flattened result."""
    if key in result:
        return True, result[key]
    if "/" not in key:
        return False, None
    flat = flatten(result)
    return (key in flat), flat.get(key)
