"""The kwok stages and fake nodes of the scale benchmark (localcluster/addons/
kwok.py and kwok_stages.py): pure rendering, no cluster, no kwok binary."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from localcluster.addons import kwok, kwok_stages, supervise  # noqa: E402
from localcluster.config import Layout  # noqa: E402


def _by_name() -> dict[str, dict]:
    return {s["metadata"]["name"]: s for s in kwok_stages.stages()}


def test_the_stage_file_round_trips_and_names_every_stage_once() -> None:
    text = kwok_stages.render_stages()
    docs = list(yaml.safe_load_all(text))
    assert docs == kwok_stages.stages()
    names = [d["metadata"]["name"] for d in docs]
    assert names == [
        "node-initialize",
        "node-heartbeat-with-lease",
        "pod-ready",
        "pod-complete",
        "pod-fail",
        "pod-delete",
    ]
    assert all(d["apiVersion"] == "kwok.x-k8s.io/v1alpha1" and d["kind"] == "Stage" for d in docs)
    # templates come out as readable blocks, not one escaped line
    assert "statusTemplate: |" in text


def _keys(stage: dict) -> dict[str, tuple[str, list[str]]]:
    return {
        e["key"] + ("/" + e["operator"] if e["operator"] == "NotIn" else ""): (
            e["operator"],
            e.get("values", []),
        )
        for e in stage["spec"]["selector"]["matchExpressions"]
    }


def test_pod_complete_fires_on_our_annotation_not_on_a_job_owner() -> None:
    stage = _by_name()["pod-complete"]
    keys = _keys(stage)
    assert keys[f'.metadata.annotations["{kwok_stages.EXIT_ANNOTATION}"]'] == ("In", ["0"])
    assert keys[".status.phase"] == ("In", ["Running"])
    assert keys[".metadata.deletionTimestamp"] == ("DoesNotExist", [])
    assert not any("ownerReferences" in k for k in keys)
    template = stage["spec"]["next"]["statusTemplate"]
    status = yaml.safe_load(template.replace("{{", "#").replace("}}", ""))  # shape only
    assert status["phase"] == "Succeeded"
    assert "exitCode: 0" in template and "reason: Completed" in template
    assert "range .spec.containers" in template  # the worker container gets it


def test_pod_fail_ends_failed_with_the_annotated_exit_code() -> None:
    stage = _by_name()["pod-fail"]
    key = f'.metadata.annotations["{kwok_stages.EXIT_ANNOTATION}"]'
    ops = [
        (e["operator"], e.get("values"))
        for e in stage["spec"]["selector"]["matchExpressions"]
        if e["key"] == key
    ]
    assert ("Exists", None) in ops and ("NotIn", ["0"]) in ops
    template = stage["spec"]["next"]["statusTemplate"]
    # inside `range .spec.containers` the dot is the container: the pod is $root
    assert f'index $root.metadata.annotations "{kwok_stages.EXIT_ANNOTATION}" | atoi' in template
    assert "phase: Failed" in template


def test_pods_being_deleted_are_removed_and_ready_pods_start_running() -> None:
    stages = _by_name()
    delete = stages["pod-delete"]
    assert delete["spec"]["next"]["delete"] is True
    assert _keys(delete) == {".metadata.deletionTimestamp": ("Exists", [])}
    ready = stages["pod-ready"]
    assert "phase: Running" in ready["spec"]["next"]["statusTemplate"]
    assert _keys(ready)[".status.phase"] == ("In", ["Pending"])


def test_fake_nodes_are_tainted_labelled_and_hold_one_to_four_gpus() -> None:
    nodes = [kwok.node_manifest(i) for i in range(8)]
    gpus = [int(n["status"]["allocatable"]["nvidia.com/gpu"]) for n in nodes]
    assert gpus == [1, 2, 3, 4, 1, 2, 3, 4]
    node = nodes[0]
    assert node["metadata"]["annotations"] == {kwok.NODE_ANNOTATION: kwok.NODE_ANNOTATION_VALUE}
    assert node["metadata"]["labels"]["type"] == "kwok"
    assert node["spec"]["taints"] == [
        {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
    ]
    assert int(node["status"]["allocatable"]["pods"]) >= 500
    # a worker template with NODE_SELECTOR and TOLERATION lands there
    taint = node["spec"]["taints"][0]
    tol = kwok.TOLERATION
    assert (tol["key"], tol["value"], tol["effect"]) == (
        taint["key"],
        taint["value"],
        taint["effect"],
    )
    assert all(node["metadata"]["labels"][k] == v for k, v in kwok.NODE_SELECTOR.items())


def test_kwok_manages_only_annotated_nodes_and_dies_with_the_apiserver(tmp_path) -> None:
    lay = Layout(repo=tmp_path, cache=tmp_path / "cache", state=tmp_path / "state")
    argv = kwok.kwok_argv(lay, kwok.kwok_bin(lay), tmp_path / "stages.yaml")
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in argv
    assert not any(a.startswith("--manage-all-nodes") for a in argv)
    assert str(kwok.kwok_bin(lay)).endswith(f"kwok-{kwok.KWOK_VERSION}/bin/kwok")
    wrapped = supervise.supervised(argv, 4242)
    assert wrapped[:2] == ["bash", "-c"]
    assert "kill -0 4242" in wrapped[2] and "--node-lease-duration-seconds" in wrapped[2]
