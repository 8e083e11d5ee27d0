"""What the cluster commands print, as pure functions of TrainableJob bodies
(plain dicts as the API server returns them): reading a body's fields, the
`get` table, the watch's progress line and outcome. `describe` is
kubetune.cli.render_describe, the `results` table kubetune.cli.render_results.

No Kubernetes client, no clock, no terminal: callers pass `now` and widths, so
every rendering is tested from sample dicts."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from kubetune.runtime.display import format_value
from kubetune.sdk.result_keys import AUTO_FILLED_KEYS, TRAINING_ITERATION

RESOURCE = "trainablejob.kubetune.io"
RESOURCES = "trainablejobs.kubetune.io"
TERMINAL = ("Succeeded", "Failed")
NONE = "<none>"


def spec_of(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body.get("spec") or {})


def status_of(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body.get("status") or {})


def name_of(body: dict[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")


def phase_of(body: dict[str, Any]) -> str:
    return str(status_of(body).get("phase") or "")


def is_terminal(body: dict[str, Any]) -> bool:
    return phase_of(body) in TERMINAL


def condition(body: dict[str, Any], ctype: str) -> dict[str, Any]:
    for c in status_of(body).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


# time


def parse_time(text: Any) -> datetime | None:
    if not text:
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=timezone.utc)
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's AGE: 45s, 3m12s, 42m, 5h7m, 3d4h, 120d, 2y."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    h = m // 60
    if h < 3:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    d = h // 24
    if h < 48:
        return f"{h}h"
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def age(timestamp: Any, now: datetime) -> str:
    when = parse_time(timestamp)
    return "<unknown>" if when is None else human_duration((now - when).total_seconds())


# values


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any) -> int | None:
    return int(value) if is_number(value) else None


def iteration_of(body: dict[str, Any]) -> int | None:
    status = status_of(body)
    value = status.get("iteration")
    if value is None:
        value = (status.get("lastResult") or {}).get(TRAINING_ITERATION)
    return _int(value)


def stop_target(body: dict[str, Any]) -> int | None:
    """spec.stop.training_iteration: what the progress bar counts towards."""
    value = (spec_of(body).get("stop") or {}).get(TRAINING_ITERATION)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return math.ceil(value)
    return None


def metric_of(body: dict[str, Any]) -> tuple[str, Any] | None:
    """checkpoint.scoreAttribute when set; else the first stop criterion of the
    trainable's own (not training_iteration); else the first numeric key of
    lastResult (in the API server's order, alphabetical) that the trainable
    reported itself (not an auto-filled one)."""
    result = status_of(body).get("lastResult") or {}
    score = (spec_of(body).get("checkpoint") or {}).get("scoreAttribute")
    if score:
        return (score, result[score]) if score in result else None
    for key in spec_of(body).get("stop") or {}:
        if key not in AUTO_FILLED_KEYS and is_number(result.get(key)):
            return key, result[key]
    for key, value in result.items():
        if key not in AUTO_FILLED_KEYS and is_number(value):
            return key, value
    return None


def checkpoint_iteration(body: dict[str, Any], which: str = "latestCheckpoint") -> int | None:
    return _int((status_of(body).get(which) or {}).get("iteration"))


def cell(value: Any) -> str:
    return NONE if value is None or value == "" else str(value)


# the `get` table


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns left-aligned, three spaces apart, as kubectl prints them."""
    table = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = []
    for row in table:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def job_headers(wide: bool, all_namespaces: bool = False) -> list[str]:
    headers = ["NAME", "PHASE", "ITERATION", "CHECKPOINT", "AGE"]
    if wide:
        headers += ["ATTEMPT", "FAILURES", "PREEMPTIONS", "WORKER POD", "METRIC"]
    return ["NAMESPACE", *headers] if all_namespaces else headers


def job_row(
    body: dict[str, Any], now: datetime, wide: bool = False, all_namespaces: bool = False
) -> list[str]:
    status = status_of(body)
    meta = body.get("metadata") or {}
    row = [
        name_of(body),
        phase_of(body) or "Pending",
        cell(iteration_of(body)),
        cell(checkpoint_iteration(body)),
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        score = (spec_of(body).get("checkpoint") or {}).get("scoreAttribute")
        value = (status.get("lastResult") or {}).get(score) if score else None
        row += [
            cell(status.get("attempt")),
            str(status.get("failures") or 0),
            str(status.get("preemptions") or 0),
            cell(status.get("workerPod")),
            f"{score}={format_value(value)}" if score and value is not None else NONE,
        ]
    return [str(meta.get("namespace") or ""), *row] if all_namespaces else row


def render_jobs(
    bodies: Sequence[dict[str, Any]],
    now: datetime,
    wide: bool = False,
    all_namespaces: bool = False,
) -> str:
    rows = [job_row(b, now, wide, all_namespaces) for b in bodies]
    return render_table(job_headers(wide, all_namespaces), rows)


# the watch: progress line and outcome


def progress_bar(done: int, total: int, width: int = 24) -> str:
    filled = min(width, max(0, done * width // total)) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def progress_line(body: dict[str, Any], bar_width: int | None = 24) -> str:
    """One line of a job's state: `NAME [#####-----] 12/30 40% Running score=12 ckpt 10`
    (bar_width None, or no spec.stop.training_iteration: `iter 12` and no bar)."""
    iteration = iteration_of(body)
    target = stop_target(body)
    parts = [name_of(body)]
    if target is not None and bar_width:
        done = iteration or 0
        percent = min(100, done * 100 // target)
        parts += [progress_bar(done, target, bar_width), f"{done}/{target}", f"{percent:3d}%"]
    elif target is not None:
        parts.append(f"iter {iteration or 0}/{target}")
    else:
        parts.append(f"iter {cell(iteration) if iteration is not None else 0}")
    parts.append(phase_of(body) or "Pending")
    metric = metric_of(body)
    if metric is not None:
        parts.append(f"{metric[0]}={format_value(metric[1])}")
    latest = checkpoint_iteration(body)
    parts.append(f"ckpt {latest}" if latest is not None else "no ckpt")
    attempt = _int(status_of(body).get("attempt"))
    if attempt is not None and attempt > 1:
        parts.append(f"attempt {attempt}")
    return "  ".join(parts)


def outcome(body: dict[str, Any]) -> tuple[int, str]:
    """(exit code, the last line) of a finished job: `Succeeded: <message>`
    or `Failed: <reason>: <message>`."""
    phase = phase_of(body)
    if phase == "Succeeded":
        message = condition(body, "Complete").get("message") or "completed"
        facts = [f"iteration {cell(iteration_of(body))}"]
        latest = checkpoint_iteration(body)
        if latest is not None:
            facts.append(f"latest checkpoint {latest}")
        best = checkpoint_iteration(body, "bestCheckpoint")
        if best is not None:
            facts.append(f"best checkpoint {best}")
        return 0, f"Succeeded: {message} ({', '.join(facts)})"
    failed = condition(body, "Failed")
    reason = failed.get("reason") or "Failed"
    message = " ".join(str(failed.get("message") or "").split()) or "no message"
    return 1, f"Failed: {reason}: {message}"
