"""What `kubetune describe` prints, kept apart from the `get` table and the
watch line (kubetune.cli.render): a TrainableJob body and its events as
kubectl-describe-like sections, a pure function of the body, the events and
`now`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from kubetune.cli.render import (
    NONE,
    age,
    cell,
    iteration_of,
    name_of,
    render_table,
    spec_of,
    status_of,
)
from kubetune.runtime.display import format_value


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
    return [f"{indent}{(k + ':').ljust(width)}{cell(v)}" for k, v in fields]


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
        lines += _field_lines([(str(k), format_value(v)) for k, v in result.items()], indent="  ")
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
