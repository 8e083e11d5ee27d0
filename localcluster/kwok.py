"""kwok on the local cluster: fake nodes on which thousands of worker pods reach
Running and end without running a process each (the operator scale benchmark).

`python -m localcluster kwok up [--nodes N]` creates N nodes labelled
`type: kwok`, annotated `kwok.x-k8s.io/node: fake` and tainted
`kwok.x-k8s.io/node=fake:NoSchedule`, and starts kwok as a host process that
manages only those nodes and the pods bound to them. `kwok down` stops it and
deletes the nodes; `kwok status` says what runs. `make cluster-up` knows
nothing of kwok: the real nodes and the node agent are untouched.

Standalone kwok ships no stages; ours are below (`stages()`), modelled on
kwok's kustomize/stage/{node,pod}/fast:

- node-initialize, node-heartbeat-with-lease: nodes become Ready and stay so
  (kwok renews their Leases itself, `--node-lease-duration-seconds`).
- pod-ready: a pod bound to a kwok node becomes Running at once.
- pod-complete: a Running pod annotated `kubetune.io/kwok-exit: "0"` ends
  `Succeeded`, every container `terminated: {exitCode: 0, reason: Completed}`.
  Worker pods are not owned by a batch Job, so kwok's own pod-complete (which
  matches Job pods) would never fire; the load generator sets the annotation
  when the worker it plays has finished.
- pod-fail: the same annotation with another number (`"1"`, `"75"` ...) ends
  the pod `Failed` with that exit code and reason `Error`.
- pod-delete: a pod with a deletionTimestamp (graceful delete, e.g. suspend, or
  its namespace going) is removed at once, as a kubelet does once the
  container has stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from localcluster.artifacts import SetupError, build_tool
from localcluster.config import Layout
from localcluster.procs import recorded_pid, spawn, stop_group

KWOK_VERSION = os.environ.get("KWOK_VERSION", "v0.8.0")
NAME = "kwok"  # .cluster/logs/kwok.log, .cluster/pids/kwok.pid

NODE_ANNOTATION = "kwok.x-k8s.io/node"
NODE_ANNOTATION_VALUE = "fake"
NODE_LABEL = "type"
NODE_LABEL_VALUE = "kwok"
NODE_PREFIX = "kwok-node-"
DEFAULT_NODE_COUNT = 50
# What a worker pod's template needs to land on a kwok node.
NODE_SELECTOR = {NODE_LABEL: NODE_LABEL_VALUE}
TOLERATION = {
    "key": NODE_ANNOTATION,
    "operator": "Equal",
    "value": NODE_ANNOTATION_VALUE,
    "effect": "NoSchedule",
}
# The load generator's trigger: the exit code the pod's containers end with.
EXIT_ANNOTATION = "kubetune.io/kwok-exit"

LEASE_DURATION_S = 40
POD_CIDR = "10.64.0.0/12"  # room for a million fake pod IPs (kwok's default is a /24)
READY_TIMEOUT_S = 120.0


def kwok_bin(lay: Layout) -> Path:
    return lay.cache / f"kwok-{KWOK_VERSION}" / "bin" / "kwok"


def node_name(index: int) -> str:
    return f"{NODE_PREFIX}{index:04d}"


def node_gpus(index: int) -> int:
    """1, 2, 3, 4, 1, 2 ...: no node fits a worker asking for more than 4 GPUs."""
    return 1 + index % 4


def node_manifest(index: int) -> dict[str, Any]:
    """A fake node: roomy enough for hundreds of worker pods, with 1-4 GPUs."""
    resources = {
        "cpu": "256",
        "memory": "1Ti",
        "pods": "1000",
        "nvidia.com/gpu": str(node_gpus(index)),
        "ephemeral-storage": "1Ti",
    }
    name = node_name(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: NODE_ANNOTATION_VALUE},
            "labels": {
                NODE_LABEL: NODE_LABEL_VALUE,
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
            },
        },
        "spec": {
            "taints": [
                {"key": NODE_ANNOTATION, "value": NODE_ANNOTATION_VALUE, "effect": "NoSchedule"}
            ]
        },
        "status": {"allocatable": dict(resources), "capacity": dict(resources)},
    }


def _stage(
    name: str, kind: str, selector: dict[str, Any], nxt: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "resourceRef": {"apiGroup": "v1", "kind": kind},
        "selector": selector,
        **extra,
        "next": nxt,
    }
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": spec,
    }


def _expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        out["values"] = list(values)
    return out


_READY = '.status.conditions.[] | select( .type == "Ready" ) | .status'
_EXIT_KEY = f'.metadata.annotations["{EXIT_ANNOTATION}"]'

_NODE_STATUS = """\
{{ $now := Now }}
{{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $lastTransitionTime | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
addresses:
{{ with .status.addresses }}
{{ YAML . 1 }}
{{ else }}
{{ with NodeIP }}
- address: {{ . | Quote }}
  type: InternalIP
{{ end }}
{{ with NodeName }}
- address: {{ . | Quote }}
  type: Hostname
{{ end }}
{{ end }}
"""

_NODE_INIT = (
    _NODE_STATUS
    + """\
allocatable:
{{ with .status.allocatable }}
{{ YAML . 1 }}
{{ else }}
  cpu: 1k
  memory: 1Ti
  pods: 1M
{{ end }}
capacity:
{{ with .status.capacity }}
{{ YAML . 1 }}
{{ else }}
  cpu: 1k
  memory: 1Ti
  pods: 1M
{{ end }}
nodeInfo:
  architecture: amd64
  bootID: ""
  containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
  machineID: ""
  operatingSystem: linux
  osImage: ""
  systemUUID: ""
phase: Running
"""
)

_POD_READY = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodReadyToStartContainers
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) \
( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""

# {exit}, {reason}, {phase} and {condition} are filled in by stages() with
# str.format, so the template's own braces are doubled.
_POD_END = """\
{{{{ $now := Now }}}}
{{{{ $root := . }}}}
conditions:
- lastTransitionTime: {{{{ $now | Quote }}}}
  reason: {condition}
  status: "False"
  type: ContainersReady
- lastTransitionTime: {{{{ $now | Quote }}}}
  reason: {condition}
  status: "False"
  type: Ready
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: false
  restartCount: 0
  started: false
  state:
    terminated:
      exitCode: {exit}
      finishedAt: {{{{ $now | Quote }}}}
      reason: {reason}
      startedAt: {{{{ or $root.status.startTime $now | Quote }}}}
{{{{ end }}}}
phase: {phase}
"""


def stages() -> list[dict[str, Any]]:
    """kwok's Stage objects for our fake nodes and the worker pods on them."""
    running = _expr(".status.phase", "In", "Running")
    alive = _expr(".metadata.deletionTimestamp", "DoesNotExist")
    exit_code = f'{{{{ index $root.metadata.annotations "{EXIT_ANNOTATION}" | atoi }}}}'
    return [
        _stage(
            "node-initialize",
            "Node",
            {"matchExpressions": [_expr(_READY, "NotIn", "True")]},
            {"statusTemplate": _NODE_INIT},
        ),
        _stage(
            "node-heartbeat-with-lease",
            "Node",
            {"matchExpressions": [running, _expr(_READY, "In", "True")]},
            {"statusTemplate": _NODE_STATUS},
            # Leases carry the heartbeat; status is refreshed every 10 min.
            delay={"durationMilliseconds": 600000, "jitterDurationMilliseconds": 610000},
        ),
        _stage(
            "pod-ready",
            "Pod",
            {
                "matchExpressions": [
                    alive,
                    _expr(".status.phase", "In", "Pending"),
                    _expr(_READY, "NotIn", "True"),
                ]
            },
            {"statusTemplate": _POD_READY},
        ),
        _stage(
            "pod-complete",
            "Pod",
            {"matchExpressions": [alive, running, _expr(_EXIT_KEY, "In", "0")]},
            {
                "statusTemplate": _POD_END.format(
                    exit=0, reason="Completed", phase="Succeeded", condition="PodCompleted"
                )
            },
        ),
        _stage(
            "pod-fail",
            "Pod",
            {
                "matchExpressions": [
                    alive,
                    running,
                    _expr(_EXIT_KEY, "Exists"),
                    _expr(_EXIT_KEY, "NotIn", "0"),
                ]
            },
            {
                "statusTemplate": _POD_END.format(
                    exit=exit_code, reason="Error", phase="Failed", condition="PodFailed"
                )
            },
        ),
        _stage(
            "pod-delete",
            "Pod",
            {"matchExpressions": [_expr(".metadata.deletionTimestamp", "Exists")]},
            {"delete": True},
        ),
    ]


class _BlockDumper(yaml.SafeDumper):
    """Templates as `|` blocks: the stage file stays readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def render_stages() -> str:
    return yaml.dump_all(stages(), Dumper=_BlockDumper, sort_keys=False, width=1000)


def kwok_argv(lay: Layout, binary: Path, stages_file: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={lay.kubeconfig}",
        f"--config={stages_file}",
        f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}={NODE_ANNOTATION_VALUE}",
        f"--node-lease-duration-seconds={LEASE_DURATION_S}",
        f"--cidr={POD_CIDR}",
        "--v=WARN",  # INFO logs a line per patch: megabytes at thousands of pods
    ]


def supervised(argv: list[str], apiserver_pid: int) -> list[str]:
    """kwok under a tiny shell that ends it when the apiserver goes (so `make
    cluster-down` never leaves it behind) and that ends with it."""
    quoted = " ".join(_sh_quote(a) for a in argv)
    script = (
        f"{quoted} & k=$!; trap 'kill $k 2>/dev/null' TERM INT; "
        f"while kill -0 $k 2>/dev/null && kill -0 {apiserver_pid} 2>/dev/null; do sleep 2; done; "
        "kill $k 2>/dev/null; wait $k"
    )
    return ["bash", "-c", script]


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


class _Api:
    """Admin HTTPS to the local apiserver (the token of .cluster/secrets.json)."""

    def __init__(self, lay: Layout) -> None:
        self.base = f"https://127.0.0.1:{lay.ports.apiserver}"
        self.ctx = ssl.create_default_context(cafile=str(lay.pki / "ca.crt"))
        self.token = json.loads(lay.secrets_file.read_text())["admin_token"]

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, None


def ensure_built(lay: Layout) -> Path:
    try:
        return build_tool(lay, "kwok", kwok_bin(lay), f"kwok {KWOK_VERSION}", "1.26", 3)
    except SetupError as err:
        raise SystemExit(f"error: {err}") from None


def _ready_nodes(api: _Api) -> set[str]:
    selector = urllib.parse.quote(f"{NODE_LABEL}={NODE_LABEL_VALUE}")
    code, body = api.call("GET", f"/api/v1/nodes?labelSelector={selector}")
    if code != 200:
        return set()
    return {
        n["metadata"]["name"]
        for n in body["items"]
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (n.get("status") or {}).get("conditions") or []
        )
    }


def up(lay: Layout, count: int = DEFAULT_NODE_COUNT) -> int:
    """Creates `count` kwok nodes and starts kwok (idempotent); waits until they are Ready."""
    from localcluster.cluster import healthy

    if not healthy(lay):
        print("error: the local cluster is not up: run `make cluster-up` first", file=sys.stderr)
        return 1
    binary = ensure_built(lay)
    started = time.monotonic()
    api = _Api(lay)
    for index in range(count):
        code, _ = api.call("POST", "/api/v1/nodes", node_manifest(index))
        if code not in (201, 409):
            print(f"error: creating node {node_name(index)} failed: HTTP {code}", file=sys.stderr)
            return 1
    if recorded_pid(lay.pids, NAME) is None:
        folder = lay.state / "kwok"
        folder.mkdir(parents=True, exist_ok=True)
        stages_file = folder / "stages.yaml"
        stages_file.write_text(render_stages())
        apiserver = recorded_pid(lay.pids, "kube-apiserver")
        assert apiserver is not None  # healthy() checked it
        spawn(
            NAME,
            supervised(kwok_argv(lay, binary, stages_file), apiserver),
            logs=lay.logs,
            pids=lay.pids,
            cwd=lay.repo,
        )
    wanted = {node_name(i) for i in range(count)}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not wanted <= _ready_nodes(api):
        if recorded_pid(lay.pids, NAME) is None:
            print(f"error: kwok exited: see {lay.logs / 'kwok.log'}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(
                f"error: kwok nodes not Ready after {READY_TIMEOUT_S:.0f}s: "
                f"see {lay.logs / 'kwok.log'}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.5)
    print(
        f"kwok {KWOK_VERSION} up: {count} nodes `{NODE_LABEL}={NODE_LABEL_VALUE}` Ready "
        f"in {time.monotonic() - started:.1f}s (log {lay.logs / 'kwok.log'})",
        flush=True,
    )
    return 0


def down(lay: Layout) -> int:
    """Stops kwok and deletes its nodes (pods left on them go with the pod GC)."""
    pid = recorded_pid(lay.pids, NAME)
    if pid is not None:
        stop_group(pid, grace_s=5)
    (lay.pids / f"{NAME}.pid").unlink(missing_ok=True)
    if lay.secrets_file.exists():
        api = _Api(lay)
        selector = urllib.parse.quote(f"{NODE_LABEL}={NODE_LABEL_VALUE}")
        with contextlib.suppress(OSError):  # the apiserver is gone: so are the nodes
            api.call("DELETE", f"/api/v1/nodes?labelSelector={selector}")
    print("kwok stopped, its nodes deleted")
    return 0


def status(lay: Layout) -> int:
    pid = recorded_pid(lay.pids, NAME)
    ready = len(_ready_nodes(_Api(lay))) if lay.secrets_file.exists() and pid else 0
    print(f"kwok: {'running, pid ' + str(pid) if pid else 'not running'}; {ready} nodes Ready")
    return 0 if pid else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcluster kwok",
        description="Fake kwok nodes on the local cluster, for the scale benchmark.",
    )
    parser.add_argument("action", choices=["up", "down", "status", "stages"])
    parser.add_argument(
        "--nodes", type=int, default=DEFAULT_NODE_COUNT, help="how many fake nodes (up)"
    )
    args = parser.parse_args(argv)
    lay = Layout.discover()
    if args.action == "stages":
        print(render_stages(), end="")
        return 0
    if args.action == "up":
        if args.nodes < 1:
            print("error: --nodes must be at least 1", file=sys.stderr)
            return 2
        return up(lay, args.nodes)
    if args.action == "down":
        return down(lay)
    return status(lay)
