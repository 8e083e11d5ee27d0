"""The pure rules behind checkpoints: manifests, scores, what to keep."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from kubetune.storage.checkpoints import (
    CheckpointInfo,
    build_manifest,
    missing_files,
    parse_manifest,
    pick_best,
    pick_to_delete,
    scalar_metrics,
)


def ck(iteration: int, **metrics: Any) -> CheckpointInfo:
    return CheckpointInfo(iteration, f"/r/checkpoint_{iteration:06d}", 0.0, metrics)


def test_to_status_is_rfc3339() -> None:
    info = CheckpointInfo(40, "s3://b/p/checkpoint_000040", 1700000000.5, {"a": 1})
    assert info.to_status() == {
        "path": "s3://b/p/checkpoint_000040",
        "iteration": 40,
        "time": "2023-11-14T22:13:20Z",
    }


def test_scalar_metrics_flattens_and_drops_non_scalars() -> None:
    class Scalar:
        def item(self) -> float:
            return 0.5

    result = {
        "acc": 0.9,
        "done": False,
        "note": "ok",
        "long": "x" * 1000,
        "config": {"lr": 0.1, "layers": [1, 2]},
        "hist": [1, 2, 3],
        "np": Scalar(),
        "none": None,
    }
    assert scalar_metrics(result) == {
        "acc": 0.9,
        "done": False,
        "note": "ok",
        "config/lr": 0.1,
        "np": 0.5,
        "none": None,
    }


def test_manifest_roundtrip() -> None:
    m = build_manifest(7, [("b", 2), ("a/x", 1)], {"acc": 1.0, "nested": {"k": 2}}, 123.0)
    parsed = parse_manifest(json.dumps(m).encode())
    assert parsed is not None
    assert parsed["iteration"] == 7
    assert parsed["files"] == [{"path": "a/x", "size": 1}, {"path": "b", "size": 2}]
    assert parsed["metrics"] == {"acc": 1.0, "nested/k": 2}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"[]",
        b'{"kind": "other"}',
        json.dumps({"kind": "kubetune-checkpoint", "iteration": -1}).encode(),
        json.dumps(
            {"kind": "kubetune-checkpoint", "iteration": 1, "time": 1, "metrics": {}, "files": [{}]}
        ).encode(),
        json.dumps(
            {
                "kind": "kubetune-checkpoint",
                "iteration": True,
                "time": 1,
                "metrics": {},
                "files": [],
            }
        ).encode(),
    ],
    ids=["empty", "truncated", "list", "foreign", "negative", "bad-file", "bool-iteration"],
)
def test_parse_manifest_rejects(raw: bytes) -> None:
    assert parse_manifest(raw) is None


def test_missing_files_checks_presence_and_size() -> None:
    m = build_manifest(1, [("a", 3), ("b", 4)], {}, 0.0)
    assert missing_files(m, {"a": 3, "b": 4, "extra": 1}) == []
    assert missing_files(m, {"a": 3}) == ["b"]
    assert missing_files(m, {"a": 2, "b": 4}) == ["a"]  # truncated


@pytest.mark.parametrize(
    ("checkpoints", "attr", "order", "best"),
    [
        ([ck(1), ck(2), ck(3)], None, "max", 3),
        ([ck(1, acc=0.5), ck(2, acc=0.9), ck(3, acc=0.7)], "acc", "max", 2),
        ([ck(1, loss=0.5), ck(2, loss=0.9), ck(3, loss=0.7)], "loss", "min", 1),
        ([ck(1, acc=0.9), ck(2, acc=0.9)], "acc", "max", 2),
        ([ck(1, acc=math.nan), ck(2, acc=-math.inf)], "acc", "max", 2),
        ([ck(1, acc=0.1), ck(2)], "acc", "max", 1),
        ([ck(1), ck(2, acc="high")], "acc", "max", None),
        ([], "acc", "max", None),
    ],
    ids=[
        "recency",
        "max",
        "min",
        "tie-newest",
        "nan-worst",
        "unscored-never-best",
        "none",
        "empty",
    ],
)
def test_pick_best(
    checkpoints: list[CheckpointInfo], attr: str | None, order: str, best: int | None
) -> None:
    found = pick_best(checkpoints, attr, order)
    assert (found.iteration if found else None) == best


@pytest.mark.parametrize(
    ("checkpoints", "keep", "attr", "order", "deleted"),
    [
        ([ck(i) for i in range(1, 6)], 2, None, "max", [1, 2, 3]),
        ([ck(i) for i in range(1, 6)], 10, None, "max", []),
        # best two are 2 and 3; the latest (5) is kept too
        (
            [ck(1, a=1), ck(2, a=9), ck(3, a=8), ck(4, a=2), ck(5, a=0)],
            2,
            "a",
            "max",
            [1, 4],
        ),
        # keep 1 by score: the best (2) and the latest (5) both stay
        ([ck(1, a=1), ck(2, a=9), ck(3, a=8), ck(5, a=0)], 1, "a", "max", [1, 3]),
        ([ck(1, l=3), ck(2, l=1), ck(3, l=2)], 1, "l", "min", [1]),
        # unscored ones rank below all scored ones
        ([ck(1), ck(2, a=1), ck(3, a=2), ck(4, a=0)], 2, "a", "max", [1]),
    ],
    ids=["recency", "keep-all", "score", "latest-and-best", "min", "unscored-last"],
)
def test_pick_to_delete(
    checkpoints: list[CheckpointInfo], keep: int, attr: str | None, order: str, deleted: list[int]
) -> None:
    assert [c.iteration for c in pick_to_delete(checkpoints, keep, attr, order)] == deleted


@pytest.mark.parametrize("keep", [0, -1, True, 1.5])
def test_pick_to_delete_rejects_bad_keep(keep: Any) -> None:
    with pytest.raises(ValueError, match="num_to_keep"):
        pick_to_delete([ck(1)], keep, None)


def test_bad_score_order() -> None:
    with pytest.raises(ValueError, match="'max' or 'min'"):
        pick_best([ck(1)], "a", "largest")
