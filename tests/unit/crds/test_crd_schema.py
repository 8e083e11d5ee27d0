"""The TrainableJob CRD says what DESIGN.md promises, teaches through its
descriptions, and agrees with the operator's vocabulary; checked without a cluster."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_operator.model import Cond, Phase, Reason

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "kubetune.io_trainablejobs.yaml"

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    with CRD_PATH.open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = yaml.safe_load(fh)
    return loaded


@pytest.fixture(scope="module")
def version(crd: dict[str, Any]) -> dict[str, Any]:
    versions: list[dict[str, Any]] = crd["spec"]["versions"]
    assert len(versions) == 1, "one version until a conversion strategy exists"
    return versions[0]


@pytest.fixture(scope="module")
def root(version: dict[str, Any]) -> Schema:
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def nodes(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node below `schema` with its path: properties, items, map values."""
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from nodes(sub, f"{path}.{name}")
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        sub = schema.get(key)
        if isinstance(sub, dict):
            yield path + suffix, sub
            yield from nodes(sub, path + suffix)


def matches_rule_patterns(rule: str) -> list[str]:
    """The regexes of a rule made only of `self.matches('...')` joined by &&."""
    parts = [p.strip() for p in rule.split("&&")]
    found = [re.fullmatch(r"self\.matches\('(.*)'\)", p) for p in parts]
    assert all(found), f"not a pure matches() rule: {rule}"
    return [m.group(1) for m in found if m]


def field_accepts(schema: Schema, value: str) -> bool:
    """Evaluates a field's matches() rules the way the API server would."""
    rules = [r["rule"] for r in schema.get("x-kubernetes-validations", [])]
    patterns = [p for r in rules if "oldSelf" not in r for p in matches_rule_patterns(r)]
    assert patterns, "the field has no matches() rule"
    return len(value) <= schema["maxLength"] and all(re.search(p, value) for p in patterns)


def test_names_match_the_design(crd: dict[str, Any], version: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "trainablejobs.kubetune.io"
    assert spec["group"] == "kubetune.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "TrainableJob",
        "listKind": "TrainableJobList",
        "plural": "trainablejobs",
        "singular": "trainablejob",
        "shortNames": ["tj"],
        "categories": ["kubetune"],
    }
    assert version["name"] == "v1alpha1"
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_spec_fields_are_the_designed_ones(root: Schema) -> None:
    spec = root["properties"]["spec"]
    assert set(spec["properties"]) == {
        "trainable", "config", "stop", "checkpoint", "storage", "image", "resources",
        "template", "suspend", "restoreFrom", "maxFailures", "activeDeadlineSeconds", "code",
    }  # fmt: skip
    assert set(spec["required"]) == {"storage"}  # and exactly one of trainable / code (CEL)
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert "has(self.trainable) != has(self.code)" in rules
    assert set(spec["properties"]["code"]["required"]) == {"uri", "sha256", "python"}
    assert set(spec["properties"]["checkpoint"]["properties"]) == {
        "frequency", "atEnd", "numToKeep", "scoreAttribute", "scoreOrder",
    }  # fmt: skip
    assert set(spec["properties"]["storage"]["properties"]) == {"uri", "endpointURL", "secretRef"}


def test_every_field_has_a_description(root: Schema) -> None:
    # The API server refuses anything on metadata itself but constraints on its name.
    missing = [
        path
        for path, node in nodes(root)
        if path != ".metadata" and not str(node.get("description", "")).strip()
    ]
    assert set(root["properties"]["metadata"]) == {"type", "properties"}
    assert not missing, f"fields without a description (kubectl explain shows nothing): {missing}"
    assert root.get("description")


def test_required_fields_exist(root: Schema) -> None:
    for path, node in [("", root), *nodes(root)]:
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{path}: required {name!r} is not a field"


def test_defaults_the_design_promises(root: Schema) -> None:
    spec = root["properties"]["spec"]["properties"]
    ckpt = spec["checkpoint"]
    # Without `default: {}` on checkpoint, a job that omits it gets none of the nested defaults.
    assert ckpt["default"] == {}
    assert ckpt["properties"]["frequency"]["default"] == 0
    # No default: unset means "at the end if the class can save" (Ray's Tuner), so a
    # class without save_checkpoint runs instead of failing InvalidTrainable.
    assert "default" not in ckpt["properties"]["atEnd"]
    assert spec["suspend"]["default"] is False
    assert spec["maxFailures"]["default"] == 3
    assert spec["maxFailures"]["minimum"] == -1
    # Defaults apply before validation: a default scoreOrder would make the
    # "scoreOrder needs scoreAttribute" rule refuse every job without scoreAttribute.
    assert "default" not in ckpt["properties"]["scoreOrder"]


def test_status_phases_and_condition_vocabulary_match_the_operator(root: Schema) -> None:
    status = root["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in Phase]
    item = status["conditions"]["items"]
    type_pattern = item["properties"]["type"]["pattern"]
    reason_pattern = item["properties"]["reason"]["pattern"]
    for ctype in Cond.ALL:
        assert re.search(type_pattern, ctype), ctype
    reasons = [v for k, v in vars(Reason).items() if k.isupper()]
    assert reasons
    for reason in reasons:
        assert re.search(reason_pattern, reason), f"reason {reason!r} would be refused"
    assert status["conditions"]["x-kubernetes-list-type"] == "map"
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_status_lists_are_capped(root: Schema) -> None:
    status = root["properties"]["status"]["properties"]
    assert status["checkpoints"]["maxItems"] == 10
    assert status["conditions"]["maxItems"] >= len(Cond.ALL)
    assert status["lastResult"]["maxProperties"] > 0


def test_printer_columns(version: dict[str, Any]) -> None:
    columns = version["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    assert default == ["Phase", "Iteration", "Checkpoint", "Age"]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Checkpoint"]["jsonPath"] == ".status.latestCheckpoint.iteration"
    for column in columns:
        path = column["jsonPath"]
        # A list position ([0], [-1:]) depends on the order of status lists: not an API.
        assert not re.search(r"\[\s*-?\d*\s*:?\s*-?\d*\s*\]", path), f"{column['name']}: {path}"
        if "conditions" in path:
            assert re.fullmatch(r'\.status\.conditions\[\?\(@\.type=="\w+"\)\]\.\w+', path), path


def test_every_cel_rule_explains_itself_and_stays_cheap(root: Schema) -> None:
    for path, node in [("", root), *nodes(root)]:
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message", "").strip(), f"{path}: rule without a message"
            assert "\n" not in rule["message"], f"{path}: messages must be one line"
            if node.get("type") == "string" and "matches" in rule["rule"]:
                assert "maxLength" in node, (
                    f"{path}: a regex rule needs maxLength to bound its cost"
                )


def test_immutable_fields(root: Schema) -> None:
    spec = root["properties"]["spec"]
    for field in (
        spec["properties"]["trainable"],
        spec["properties"]["storage"]["properties"]["uri"],
    ):
        rules = [r for r in field["x-kubernetes-validations"] if r["rule"] == "self == oldSelf"]
        assert rules and "create a new TrainableJob" in rules[0]["message"]
    assert any(r.get("fieldPath") == ".restoreFrom" for r in spec["x-kubernetes-validations"])


def test_score_order_needs_score_attribute_rule(root: Schema) -> None:
    ckpt = root["properties"]["spec"]["properties"]["checkpoint"]
    (rule,) = ckpt["x-kubernetes-validations"]
    assert rule["fieldPath"] == ".scoreAttribute"
    assert "scoreOrder" in rule["rule"] and "scoreAttribute" in rule["rule"]


TRAINABLES = [
    ("examples.mnist:MNISTTrainable", True),
    ("train:main", True),
    ("pkg._private.mod:Outer.Inner", True),
    ("examples.mnist.MNISTTrainable", False),
    ("examples.mnist:", False),
    (":MNISTTrainable", False),
    ("examples/mnist.py:MNISTTrainable", False),
    ("1mod:fn", False),
    ("mod:fn:extra", False),
    ("mod:fn ", False),
]

STORAGE_URIS = [
    ("s3://ckpts", True),
    ("s3://ckpts/experiments", True),
    ("s3://ckpts/experiments/", True),
    ("s3://my.bucket-01/a/b/c", True),
    ("gs://ckpts/experiments", False),
    ("/data/ckpts", False),
    ("s3://", False),
    ("s3://ab", False),
    ("s3://" + "a" * 64, False),
    ("s3://My_Bucket/x", False),
    ("s3://-bucket/x", False),
    ("s3://bucket-/x", False),
    ("s3://a..b/x", False),
    ("s3://ckpts//x", False),
]

ENDPOINTS = [
    ("http://minio.minio:9000", True),
    ("https://s3.us-east-1.example.com", True),
    ("http://127.0.0.1:9000/", True),
    ("minio:9000", False),
    ("ftp://minio:9000", False),
    ("http://user:secret@minio:9000", False),
    ("http://", False),
    ("http://minio :9000", False),
]

RESTORE_PATHS = [
    ("s3://ckpts/experiments/default/old-run/checkpoint_000040", True),
    ("s3://ckpts/checkpoint_000000/", True),
    ("s3://ckpts/experiments/default/old-run", False),
    ("s3://ckpts/experiments/default/old-run/checkpoint_40", False),
    ("s3://ckpts/experiments/default/old-run/checkpoint_000040/params.json", False),
    ("/tmp/checkpoint_000040", False),
    ("s3://ckpts", False),
]


def spec_field(root: Schema, *path: str) -> Schema:
    node = root["properties"]["spec"]
    for name in path:
        node = node["properties"][name]
    return node


@pytest.mark.parametrize(("value", "ok"), TRAINABLES, ids=[v for v, _ in TRAINABLES])
def test_trainable_rule(root: Schema, value: str, ok: bool) -> None:
    assert field_accepts(spec_field(root, "trainable"), value) is ok


@pytest.mark.parametrize(("value", "ok"), STORAGE_URIS, ids=[v[:20] for v, _ in STORAGE_URIS])
def test_storage_uri_rule(root: Schema, value: str, ok: bool) -> None:
    assert field_accepts(spec_field(root, "storage", "uri"), value) is ok


@pytest.mark.parametrize(("value", "ok"), ENDPOINTS, ids=[v for v, _ in ENDPOINTS])
def test_endpoint_url_rule(root: Schema, value: str, ok: bool) -> None:
    assert field_accepts(spec_field(root, "storage", "endpointURL"), value) is ok


@pytest.mark.parametrize(("value", "ok"), RESTORE_PATHS, ids=[v for v, _ in RESTORE_PATHS])
def test_restore_from_rule(root: Schema, value: str, ok: bool) -> None:
    assert field_accepts(spec_field(root, "restoreFrom"), value) is ok


def test_resource_quantity_pattern(root: Schema) -> None:
    pattern = spec_field(root, "resources", "limits")["additionalProperties"]["pattern"]
    for good in ("1", "500m", "4Gi", "1.5", "2e3"):
        assert re.search(pattern, good), good
    for bad in ("one", "4 Gi", "1GB", ""):
        assert not re.search(pattern, bad), bad
