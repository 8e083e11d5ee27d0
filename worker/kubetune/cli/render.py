"""What the cluster commands print, as pure functions of TrainableJob bodies
(plain dicts as the API server returns them): the `get` table, the `describe`
summary, the watch's progress line and outcome, the `results` table.

No Kubernetes client, no clock, no terminal: callers pass `now` and widths, so
every rendering is tested from sample dicts."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from kubetune.runtime.display import _fmt
from kubetune.sdk.result_keys import AUTO_FILLED_KEYS, TIME_TOTAL_S, TRAINING_ITERATION

RESOURCE = "trainablejob.kubetune.io"
RESOURCES = "trainablejobs.kubetune.io"
TERMINAL = ("Succeeded", "Failed")
NONE = "<none>"
# Metric columns the `results` table shows at most (after training_iteration).
MAX_RESULT_COLUMNS = 8


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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any) -> int | None:
    return int(value) if _is_number(value) else None


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
        if key not in AUTO_FILLED_KEYS and _is_number(result.get(key)):
            return key, result[key]
    for key, value in result.items():
        if key not in AUTO_FILLED_KEYS and _is_number(value):
            return key, value
    return None


def checkpoint_iteration(body: dict[str, Any], which: str = "latestCheckpoint") -> int | None:
    return _int((status_of(body).get(which) or {}).get("iteration"))


def _cell(value: Any) -> str:
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
        _cell(iteration_of(body)),
        _cell(checkpoint_iteration(body)),
        age(meta.get("creationTimestamp"), now),
    ]
    if wide:
        score = (spec_of(body).get("checkpoint") or {}).get("scoreAttribute")
        value = (status.get("lastResult") or {}).get(score) if score else None
        row += [
            _cell(status.get("attempt")),
            str(status.get("failures") or 0),
            str(status.get("preemptions") or 0),
            _cell(status.get("workerPod")),
            f"{score}={_fmt(value)}" if score and value is not None else NONE,
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


# `describe`


def _describe_checkpoint_spec(ckpt: dict[str, Any]) -> str:
    parts = []
    if ckpt.get("frequency"):
        parts.append(f"every {ckpt['frequency']} iterations")
    if ckpt.get("atEnd"):
        parts.append("at end")
    if ckpt.get("numToKeep"):
        parts.append(f"keep {ckpt['numToKeep']}")
    if ckpt.get("scoreAttribute"):
        parts.append(f"best by {ckpt.get('scoreOrder') or 'max'}({ckpt['scoreAttribute']})")
    return ", ".join(parts) or NONE


def _describe_resources(resources: dict[str, Any]) -> str:
    parts = []
    for kind in ("limits", "requests"):
        values = resources.get(kind) or {}
        if values:
            parts.append(kind + " " + ",".join(f"{k}={v}" for k, v in values.items()))
    return "; ".join(parts) or NONE


def _describe_checkpoint(entry: dict[str, Any] | None) -> str:
    if not entry:
        return NONE
    return f"iteration {entry.get('iteration')}  {entry.get('path')}  ({entry.get('time') or '?'})"


def _field_lines(fields: Sequence[tuple[str, Any]], indent: str = "") -> list[str]:
    width = max(len(k) for k, _ in fields) + 2
    return [f"{indent}{(k + ':').ljust(width)}{_cell(v)}" for k, v in fields]


def _section_table(
    title: str, headers: Sequence[str], rows: list[list[str]], empty: str = NONE
) -> list[str]:
    if not rows:
        return [f"{title}:  {empty}"]
    table = render_table(headers, rows)
    return [f"{title}:", *("  " + line for line in table.splitlines())]


def event_row(event: dict[str, Any], now: datetime) -> list[str]:
    """An event as kubectl describe shows it: type, reason, age, from, message."""
    meta = event.get("metadata") or {}
    last = event.get("lastTimestamp") or event.get("eventTime") or meta.get("creationTimestamp")
    first = event.get("firstTimestamp") or last
    count = int(event.get("count") or 1)
    when = age(last, now)
    if count > 1:
        when = f"{when} (x{count} over {age(first, now)})"
    source = (event.get("source") or {}).get("component") or event.get("reportingComponent")
    return [
        str(event.get("type") or ""),
        str(event.get("reason") or ""),
        when,
        str(source or ""),
        " ".join(str(event.get("message") or "").split()),
    ]


def _event_order(event: dict[str, Any]) -> tuple[str, int]:
    """By time (to the second), then by the order the server stored them."""
    meta = event.get("metadata") or {}
    when = event.get("lastTimestamp") or event.get("eventTime") or meta.get("creationTimestamp")
    version = str(meta.get("resourceVersion") or "")
    return str(when or ""), int(version) if version.isdigit() else 0


def render_describe(
    body: dict[str, Any],
    events: Sequence[dict[str, Any]] | None,
    now: datetime,
    events_error: str | None = None,
) -> str:
    """kubectl-describe-like: spec essentials, status, conditions, last result,
    checkpoints, counters and the job's recent events (oldest first)."""
    meta = body.get("metadata") or {}
    spec, status = spec_of(body), status_of(body)
    storage = spec.get("storage") or {}
    labels = meta.get("labels") or {}
    code = spec.get("code") or {}
    stop = spec.get("stop") or {}
    created = meta.get("creationTimestamp")
    folder = f"{str(storage.get('uri') or '').rstrip('/')}/{meta.get('namespace')}/{name_of(body)}"
    fields: list[tuple[str, Any]] = [
        ("Name", name_of(body)),
        ("Namespace", meta.get("namespace")),
        ("Labels", ",".join(f"{k}={v}" for k, v in labels.items()) or None),
        ("Created", f"{created} ({age(created, now)} ago)" if created else None),
        (
            "Trainable",
            spec.get("trainable") or (f"shipped code {code.get('uri')}" if code else None),
        ),
        ("Config", json.dumps(spec.get("config") or {}, sort_keys=True)),
        ("Stop", ", ".join(f"{k} >= {v}" for k, v in stop.items()) or None),
        ("Checkpoint", _describe_checkpoint_spec(spec.get("checkpoint") or {})),
        ("Storage", folder),
        ("Endpoint", storage.get("endpointURL")),
        ("Secret", (storage.get("secretRef") or {}).get("name")),
        ("Resources", _describe_resources(spec.get("resources") or {})),
        ("Image", spec.get("image") or "(the operator's default)"),
        ("Restore From", spec.get("restoreFrom")),
        ("Max Failures", spec.get("maxFailures", "3 (default)")),
        ("Suspend", str(bool(spec.get("suspend"))).lower()),
    ]
    lines = _field_lines(fields)
    started, completed = status.get("startTime"), status.get("completionTime")
    lines.append("Status:")
    lines += _field_lines(
        [
            ("Phase", status.get("phase") or "Pending"),
            ("Iteration", iteration_of(body)),
            ("Attempt", status.get("attempt")),
            ("Failures", status.get("failures") or 0),
            ("Preemptions", status.get("preemptions") or 0),
            ("Worker Pod", status.get("workerPod")),
            ("Started", f"{started} ({age(started, now)} ago)" if started else None),
            ("Completed", completed),
            ("Restored From", status.get("restoredFrom")),
        ],
        indent="  ",
    )
    rows = [
        [
            str(c.get("type") or ""),
            str(c.get("status") or ""),
            str(c.get("reason") or ""),
            " ".join(str(c.get("message") or "").split()),
        ]
        for c in status.get("conditions") or []
    ]
    lines += _section_table("Conditions", ["TYPE", "STATUS", "REASON", "MESSAGE"], rows)
    result = status.get("lastResult") or {}
    if result:
        lines.append("Last Result:")
        lines += _field_lines([(str(k), _fmt(v)) for k, v in result.items()], indent="  ")
    else:
        lines.append(f"Last Result:  {NONE}")
    kept = [c.get("iteration") for c in status.get("checkpoints") or []]
    lines.append("Checkpoints:")
    lines += _field_lines(
        [
            ("Latest", _describe_checkpoint(status.get("latestCheckpoint"))),
            ("Best", _describe_checkpoint(status.get("bestCheckpoint"))),
            ("Kept", ", ".join(str(i) for i in kept) or None),
        ],
        indent="  ",
    )
    if events_error:
        lines.append(f"Events:  <cannot list them: {events_error}>")
    else:
        ordered = sorted(events or [], key=_event_order)
        rows = [event_row(e, now) for e in ordered]
        lines += _section_table("Events", ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], rows)
    return "\n".join(lines)


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
        parts.append(f"iter {_cell(iteration) if iteration is not None else 0}")
    parts.append(phase_of(body) or "Pending")
    metric = metric_of(body)
    if metric is not None:
        parts.append(f"{metric[0]}={_fmt(metric[1])}")
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
        facts = [f"iteration {_cell(iteration_of(body))}"]
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


# `results`


def result_rows(results: Any) -> list[dict[str, Any]]:
    """Job.results() as a list of dicts: a pandas DataFrame (its missing cells,
    NaN, dropped) or the list of dicts it returns without pandas."""
    to_dict = getattr(results, "to_dict", None)
    if to_dict is None:
        return [dict(r) for r in results]
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for row in to_dict("records")
    ]


def result_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """training_iteration, the trainable's numeric metrics (first seen first, at
    most MAX_RESULT_COLUMNS), then time_total_s."""
    metrics: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in AUTO_FILLED_KEYS and _is_number(value) and key not in metrics:
                metrics.append(key)
    columns = [TRAINING_ITERATION, *metrics[:MAX_RESULT_COLUMNS]]
    if any(TIME_TOTAL_S in row for row in rows):
        columns.append(TIME_TOTAL_S)
    return columns


def render_results_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = result_columns(rows)
    body = [[_fmt(row[c]) if row.get(c) is not None else "" for c in columns] for row in rows]
    return render_table([c.upper() for c in columns], body)


def render_results_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Every key (first seen first); nested values (config ...) as JSON."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                json.dumps(v) if isinstance(v, dict | list) else ("" if v is None else v)
                for v in (row.get(c) for c in columns)
            ]
        )
    return out.getvalue().rstrip("\n")


def render_results_json(rows: Sequence[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(row, default=str) for row in rows)
