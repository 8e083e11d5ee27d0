"""kwok's Stage objects for the local cluster's fake nodes and the worker pods
on them (kwok itself runs from kwok.py). Standalone kwok ships no stages;
ours are modelled on kwok's kustomize/stage/{node,pod}/fast:

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

from typing import Any

import yaml

# The load generator's trigger: the exit code the pod's containers end with.
EXIT_ANNOTATION = "kubetune.io/kwok-exit"


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

# The node's own allocatable or capacity (KIND), else roomy defaults.
_RESOURCES = """\
KIND:
{{ with .status.KIND }}
{{ YAML . 1 }}
{{ else }}
  cpu: 1k
  memory: 1Ti
  pods: 1M
{{ end }}
"""

_NODE_INIT = (
    _NODE_STATUS
    + _RESOURCES.replace("KIND", "allocatable")
    + _RESOURCES.replace("KIND", "capacity")
    + """\
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
