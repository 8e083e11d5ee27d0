"""The TrainableJob CRD on a real API server: malformed jobs are refused at
`kubectl apply` with a message naming the field, good ones get their defaults,
immutable fields stay put, and `kubectl explain` / `kubectl get tj` teach."""

from __future__ import annotations

import json
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

BAD_MANIFESTS = sorted((Path(__file__).parent / "bad_manifests").glob("*.yaml"))
EXPECT = "# expect:"


def ok(proc: CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{' '.join(proc.args[1:])} failed: {proc.stderr.strip()}"
    return proc.stdout


def flat(text: str) -> str:
    """Whitespace collapsed, so wrapped output still matches a sentence."""
    return " ".join(text.split())


class Kubectl:
    """kubectl in one test namespace; callers check the outcome themselves."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.ns = namespace

    def __call__(self, *args: str, stdin: str | None = None) -> CompletedProcess[str]:
        proc: CompletedProcess[str] = self.cluster.kubectl(
            "-n", self.ns, *args, input=stdin, check=False
        )
        return proc

    def apply(self, manifest: dict[str, Any]) -> CompletedProcess[str]:
        return self("apply", "-f", "-", stdin=json.dumps(manifest))

    def spec_of(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = json.loads(ok(self("get", "tj", name, "-o", "json")))["spec"]
        return spec


@pytest.fixture(scope="module")
def crd(cluster: Any) -> None:
    crd_path = str(cluster.repo / "crds")
    apply = ("apply", "--server-side", "--force-conflicts", "-f", crd_path)
    ok(cluster.kubectl(*apply, check=False))
    established = ("wait", "--for=condition=Established", "crd/trainablejobs.kubetune.io")
    ok(cluster.kubectl(*established, check=False))


@pytest.fixture
def kubectl(crd: None, cluster: Any, namespace: str) -> Kubectl:
    return Kubectl(cluster, namespace)


def job(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "trainable": "examples.mnist:MNISTTrainable",
        "storage": {"uri": "s3://ckpts/experiments"},
    }
    body.update(spec)
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TrainableJob",
        "metadata": {"name": name},
        "spec": body,
    }


def expectations(path: Path) -> list[str]:
    """The `# expect:` lines that open a bad manifest."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for line in lines:
        if not line.startswith(EXPECT):
            break
        found.append(line[len(EXPECT) :].strip())
    return found


def test_bad_manifest_corpus_is_well_formed() -> None:
    assert len(BAD_MANIFESTS) >= 15
    for path in BAD_MANIFESTS:
        assert expectations(path), f"{path.name} must open with '{EXPECT} <text>'"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["kind"] == "TrainableJob" and doc["metadata"]["name"], path.name


@pytest.mark.parametrize("path", BAD_MANIFESTS, ids=[p.stem for p in BAD_MANIFESTS])
def test_apply_refuses_bad_manifest(kubectl: Kubectl, path: Path) -> None:
    proc = kubectl("apply", "-f", str(path))
    assert proc.returncode != 0, f"{path.name} was accepted:\n{proc.stdout}"
    for text in expectations(path):
        assert text in proc.stderr, f"{path.name}: {text!r} not in kubectl's error:\n{proc.stderr}"
    name = yaml.safe_load(path.read_text(encoding="utf-8"))["metadata"]["name"]
    assert kubectl("get", "tj", name).returncode != 0, "the job exists anyway"


def test_examples_are_accepted(kubectl: Kubectl) -> None:
    examples = sorted(kubectl.cluster.repo.glob("examples/*.yaml"))
    jobs = [p for p in examples if "kind: TrainableJob" in p.read_text(encoding="utf-8")]
    assert jobs, "no TrainableJob example to check"
    for path in jobs:
        proc = kubectl("apply", "--dry-run=server", "-f", str(path))
        assert proc.returncode == 0, f"{path.name} is refused: {proc.stderr.strip()}"


def test_minimal_job_gets_its_defaults(kubectl: Kubectl) -> None:
    out = ok(
        kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-",
            stdin=json.dumps(job("minimal")),
        )
    )  # fmt: skip
    spec = json.loads(out)["spec"]
    # atEnd stays unset: the worker saves at the end only when the class can save.
    assert spec["checkpoint"] == {"frequency": 0}
    assert spec["suspend"] is False
    assert spec["maxFailures"] == 3
    assert "activeDeadlineSeconds" not in spec and "restoreFrom" not in spec


def test_full_job_is_accepted_as_written(kubectl: Kubectl) -> None:
    manifest = job(
        "full",
        config={"lr": 0.01, "layers": [64, 32], "nested": {"a": None}},
        stop={"training_iteration": 100, "mean_accuracy": 0.98},
        checkpoint={
            "frequency": 5,
            "atEnd": False,
            "numToKeep": 3,
            "scoreAttribute": "mean_accuracy",
            "scoreOrder": "min",
        },
        storage={
            "uri": "s3://ckpts/experiments",
            "endpointURL": "http://minio.minio:9000",
            "secretRef": {"name": "s3-credentials"},
        },
        image="registry.example/kubetune-worker:0.1",
        resources={"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}, "requests": {"cpu": "500m"}},
        template={
            "metadata": {"labels": {"team": "ml"}},
            "spec": {
                "nodeSelector": {"gpu": "a100"},
                "containers": [{"name": "worker", "env": [{"name": "X", "value": "1"}]}],
            },
        },
        suspend=True,
        restoreFrom="s3://ckpts/experiments/default/old-run/checkpoint_000040",
        maxFailures=-1,
        activeDeadlineSeconds=3600,
    )
    # create, not client-side apply: apply drops null values (null means delete there).
    ok(kubectl("create", "-f", "-", stdin=json.dumps(manifest)))
    stored = kubectl.spec_of("full")
    assert stored == manifest["spec"], "the server pruned or changed fields of a valid job"


def test_immutable_fields_refuse_changes(kubectl: Kubectl) -> None:
    original = job("frozen", suspend=True)
    ok(kubectl.apply(original))
    refused: dict[str, dict[str, Any]] = {
        "spec.trainable: Forbidden: trainable is immutable": {"trainable": "examples.other:Other"},
        "spec.storage.uri: Forbidden: storage.uri is immutable": {
            "storage": {"uri": "s3://ckpts/elsewhere"}
        },
        "spec.restoreFrom: Forbidden: restoreFrom is read once": {
            "restoreFrom": "s3://ckpts/experiments/default/old/checkpoint_000001"
        },
    }
    for message, change in refused.items():
        proc = kubectl.apply(job("frozen", suspend=True, **change))
        assert proc.returncode != 0, f"{change} was accepted"
        assert message in proc.stderr, proc.stderr
        assert "create a new TrainableJob" in proc.stderr
    # Everything else may change: these rules must not get in the way of resuming.
    ok(
        kubectl.apply(
            job("frozen", suspend=False, config={"lr": 0.1}, stop={"training_iteration": 5})
        )
    )
    spec = kubectl.spec_of("frozen")
    assert spec["trainable"] == original["spec"]["trainable"]
    assert spec["suspend"] is False and spec["config"] == {"lr": 0.1}


def test_explain_teaches_the_checkpoint_fields(kubectl: Kubectl) -> None:
    out = flat(ok(kubectl("explain", "trainablejob.spec.checkpoint")))
    for name in ("frequency", "atEnd", "numToKeep", "scoreAttribute", "scoreOrder"):
        assert name in out
    assert "Save a checkpoint every this many training iterations" in out
    assert "absent means max" in out
    out = flat(ok(kubectl("explain", "tj.spec.storage.uri")))
    assert "s3://BUCKET[/PREFIX]" in out


def columns(text: str) -> dict[str, str]:
    """The header and the single row of `kubectl get` output, as a dict."""
    header, row = text.strip("\n").splitlines()
    # Sliced at the header's column starts: an empty cell (no best checkpoint
    # yet) leaves no word behind to split on.
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    bounds = zip(starts, [*starts[1:], None], strict=True)
    return {header[a:b].strip(): row[a:b].strip() for a, b in bounds}


def test_get_shows_the_columns_and_conditions_by_type(kubectl: Kubectl) -> None:
    ok(kubectl.apply(job("shown", suspend=True)))
    now = "2026-01-01T00:00:00Z"
    conditions = [
        {"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": now}
        for t, s, r in [
            ("Running", "False", "Completed"),
            ("Failed", "False", "NotFinished"),
            ("Complete", "True", "StopCriterionMet"),
            ("Finished", "True", "Succeeded"),
        ]
    ]
    status = {
        "phase": "Succeeded",
        "iteration": 7,
        "latestCheckpoint": {"path": "s3://ckpts/x/checkpoint_000005", "iteration": 5, "time": now},
        "failures": 1,
        "preemptions": 2,
        "workerPod": "shown-worker-3",
        "conditions": conditions,
    }
    patch = json.dumps({"status": status})
    ok(kubectl("patch", "tj", "shown", "--subresource=status", "--type=merge", "-p", patch))
    plain = columns(ok(kubectl("get", "tj", "shown")))
    assert list(plain) == ["NAME", "PHASE", "ITERATION", "CHECKPOINT", "AGE"]
    assert (plain["PHASE"], plain["ITERATION"], plain["CHECKPOINT"]) == ("Succeeded", "7", "5")
    wide = columns(ok(kubectl("get", "tj", "shown", "-o", "wide")))
    assert wide["COMPLETE"] == "True"
    assert (wide["FAILURES"], wide["PREEMPTIONS"], wide["WORKER"]) == ("1", "2", "shown-worker-3")
    # The category lists the job too.
    assert "shown" in ok(kubectl("get", "kubetune"))
    ok(kubectl("wait", "tj/shown", "--for=condition=Finished", "--timeout=10s"))


def test_status_schema_refuses_what_the_operator_must_never_write(kubectl: Kubectl) -> None:
    ok(kubectl.apply(job("strict-status", suspend=True)))

    def patch_status(status: dict[str, Any]) -> CompletedProcess[str]:
        body = json.dumps({"status": status})
        return kubectl(
            "patch", "tj", "strict-status", "--subresource=status", "--type=merge",
            "-p", body,
        )  # fmt: skip

    proc = patch_status({"phase": "Done"})
    assert proc.returncode != 0 and 'status.phase: Unsupported value: "Done"' in proc.stderr
    many = [{"path": f"s3://b/c/checkpoint_{i:06d}", "iteration": i} for i in range(11)]
    proc = patch_status({"checkpoints": many})
    assert proc.returncode != 0 and "status.checkpoints: Too many: 11" in proc.stderr
    proc = patch_status({"conditions": [{"type": "Complete", "status": "Yes"}]})
    assert proc.returncode != 0 and "status.conditions[0].status" in proc.stderr
