"""A malformed spec.template ends the job Failed naming the field, before any
pod is built (the builder would otherwise fail every reconcile)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from kubetune_operator.conditions import get_condition
from kubetune_operator.model import JobView
from kubetune_operator.statemachine import compute_decision
from kubetune_operator.template_check import template_problem

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("a string", "spec.template must be an object"),
        ({"metadata": []}, "spec.template.metadata must be"),
        ({"metadata": {"labels": {"a": 1}}}, "spec.template.metadata.labels"),
        ({"metadata": {"annotations": "x"}}, "spec.template.metadata.annotations"),
        ({"spec": [1]}, "spec.template.spec must be"),
        ({"spec": {"containers": {"name": "worker"}}}, "spec.template.spec.containers must"),
        ({"spec": {"containers": ["worker"]}}, "spec.template.spec.containers[0] must"),
        ({"spec": {"containers": [{"image": "x"}]}}, "spec.template.spec.containers[0].name"),
        (
            {"spec": {"containers": [{"name": "worker", "env": [{"value": "v"}]}]}},
            "spec.template.spec.containers[0].env[0].name is required",
        ),
        (
            {"spec": {"containers": [{"name": "s", "volumeMounts": [{"name": ""}]}]}},
            "spec.template.spec.containers[0].volumeMounts[0].name",
        ),
        ({"spec": {"volumes": [{"emptyDir": {}}]}}, "spec.template.spec.volumes[0].name"),
    ],
)
def test_a_malformed_template_is_named(template: Any, field: str) -> None:
    assert field in template_problem(template)


@pytest.mark.parametrize(
    "template",
    [
        None,
        {},
        {"metadata": {"labels": {"team": "a"}}, "spec": {"nodeSelector": {"a": "b"}}},
        {"spec": {"containers": [{"name": "worker", "env": [{"name": "X", "value": "ü"}]}]}},
        {"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}},
    ],
)
def test_a_good_template_passes(template: Any) -> None:
    assert template_problem(template) == ""


def test_the_job_fails_with_the_field_and_starts_no_pod() -> None:
    template = {"spec": {"containers": [{"name": "worker", "env": [{"value": "no name"}]}]}}
    spec = {"trainable": "m:T", "storage": {"uri": "s3://b/p"}, "template": template}
    d = compute_decision(JobView("j", "ns", "uid", 1, spec, {}), [], None, NOW)
    assert d.status["phase"] == "Failed" and d.create_pod is None
    failed = get_condition(d.status["conditions"], "Failed")
    assert failed is not None and failed["reason"] == "InvalidSpec"
    assert "containers[0].env[0].name is required" in failed["message"]
