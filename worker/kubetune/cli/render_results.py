"""What `kubetune results` prints, kept apart from the job renderings
(kubetune.cli.render): the rows of a job's result.json as a table of its
metrics, as CSV with every key, or as JSON lines."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from kubetune.cli.render import is_number, render_table
from kubetune.runtime.display import format_value
from kubetune.sdk.result_keys import AUTO_FILLED_KEYS, TIME_TOTAL_S, TRAINING_ITERATION

# Metric columns the `results` table shows at most (after training_iteration).
MAX_RESULT_COLUMNS = 8


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
            if key not in AUTO_FILLED_KEYS and is_number(value) and key not in metrics:
                metrics.append(key)
    columns = [TRAINING_ITERATION, *metrics[:MAX_RESULT_COLUMNS]]
    if any(TIME_TOTAL_S in row for row in rows):
        columns.append(TIME_TOTAL_S)
    return columns


def render_results_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = result_columns(rows)
    body = [
        [format_value(row[c]) if row.get(c) is not None else "" for c in columns] for row in rows
    ]
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
