"""Property-based TrainableJob manifests against the real apiserver and operator.

Hypothesis generates hundreds of manifests per run, from valid ones to hostile
ones (wrong types, out-of-range numbers, names at and past their limits,
Unicode and deep JSON in config, missing Secrets, impossible resources,
templates and restore paths that make no sense). Each one must be refused at
apply with a message naming a field, or be accepted and then end in a terminal
phase, or run, with a clear reason. Over the whole run the operator stays
alive, does not hot-loop (its CPU time is measured with psutil), and every
status it writes (seen through a watch) is valid against the CRD's own status
schema.

Cost: most accepted jobs are pinned to a node label no node has, so they stay
Pending (Unschedulable) without starting a process; about one in four runs a
real worker with a tiny stop. Replay a failure with the printed seed and count:
KUBETUNE_FUZZ_SEED=<seed> KUBETUNE_FUZZ_EXAMPLES=<n>.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from kubernetes import watch
from kubernetes.client.rest import ApiException
from operator_fixtures import SECRET, OperatorProcess, cluster_env, report_figure
from status_schema import status_problems

from localcluster.testing import Cluster

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("KUBETUNE_FUZZ_EXAMPLES") or "200")
SEED = int(os.environ.get("KUBETUNE_FUZZ_SEED") or "20261130")
GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "trainablejobs"
TERMINAL = ("Succeeded", "Failed")
# A refusal names the field at fault, as the apiserver words it
# (`spec.stop.x: Invalid value`, `unknown field "spec.foo"`, `metadata.name: ...`).
FIELD_NAMED = re.compile(r"\b(spec|metadata)(\.[A-Za-z0-9_.\[\]/-]+|:| in body)")
# No node carries this label: a job pinned to it stays Pending, Unschedulable.
NOWHERE = {"kubetune.io/fuzz": "nowhere"}

# --- the strategies ------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**62), max_value=2**62)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
odd_values = (
    json_scalars
    | st.lists(json_scalars, max_size=2)
    | st.dictionaries(st.text(max_size=5), json_scalars, max_size=2)
)


def either(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
    """Mostly valid, one time in ten hostile: most manifests then differ from a
    good one in a field or two, which is where checks go missing."""
    # sampled_from, not integers(0, 9) == 0: Hypothesis favours 0 among integers.
    return st.sampled_from([valid] * 9 + [hostile]).flatmap(lambda strategy: strategy)


trainables = either(
    st.sampled_from(["tests.e2e.trainables:Counter", "tests.e2e.trainables:counting"]),
    st.sampled_from(
        [
            "tests.e2e.trainables:NoSuchThing",
            "no_such_module:Thing",
            "os:getcwd",
            "tests/e2e/trainables.py",
            "Counter",
            "",
            "a" * 300 + ":B",
            "módulo:Clase",
        ]
    )
    | odd_values,
)
configs = either(
    st.dictionaries(st.text(max_size=12), json_values, max_size=5),
    odd_values,
)
stop_keys = either(
    st.sampled_from(["training_iteration", "score", "loss"]),
    st.sampled_from(["training_iterations", "a/b", "", "ключ", "x" * 300]),
)
stop_values = either(st.integers(1, 3) | st.floats(0.5, 3), st.integers(-5, 0) | odd_values)
stops = either(st.dictionaries(stop_keys, stop_values, max_size=3), odd_values)
checkpoints = either(
    st.fixed_dictionaries(
        {},
        optional={
            "frequency": st.integers(0, 3),
            "atEnd": st.booleans(),
            "numToKeep": st.integers(1, 3),
            "scoreAttribute": st.sampled_from(["score", "loss"]),
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "frequency": st.integers(-2, 5) | odd_values,
            "atEnd": odd_values,
            "numToKeep": st.integers(-1, 0) | odd_values,
            "scoreAttribute": st.sampled_from(["scroe", "", "a/b"]) | odd_values,
            "scoreOrder": st.sampled_from(["max", "min", "up"]) | odd_values,
            "often": st.booleans(),
        },
    ),
)
storage_uris = either(
    st.sampled_from(["s3://kubetune-e2e/fuzz", "s3://kubetune-e2e/fuzz/", "s3://kubetune-e2e"]),
    st.sampled_from(
        [
            "s3://Bad_Bucket/x",
            "s3://ab/x",
            "gs://kubetune-e2e/x",
            "/tmp/x",
            "s3://kubetune-e2e//x",
            "s3://kubetune-e2e/ü/日本",
            "s3://no-such-bucket-here/x",
        ]
    ),
)
secret_refs = either(
    st.just({"name": SECRET}),
    st.sampled_from([{"name": "missing-secret"}, {"name": "Not_A_Name"}, {}]) | odd_values,
)
quantities = either(
    st.sampled_from(["1", "100m", "256Mi"]), st.sampled_from(["0", "1000", "-1", "lots", "1e3", ""])
)
resources = st.fixed_dictionaries(
    {},
    optional={
        "limits": st.dictionaries(
            either(st.sampled_from(["cpu", "memory", "nvidia.com/gpu"]), st.just("bogus")),
            quantities,
            max_size=2,
        ),
        "requests": st.dictionaries(st.sampled_from(["cpu", "memory"]), quantities, max_size=2),
    },
)
templates = either(
    st.sampled_from(
        [
            {},
            {"metadata": {"labels": {"team": "a"}}},
            {"spec": {"containers": [{"name": "worker", "env": [{"name": "X", "value": "ü"}]}]}},
            {"spec": {"tolerations": [{"operator": "Exists"}]}},
        ]
    ),
    st.sampled_from(
        [
            {"spec": {"containers": [{"name": "sidecar"}]}},
            {"spec": {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v"}]}},
            {"metadata": {"labels": {"bad label!": "x"}}},
            {"spec": {"containers": [{"name": "worker", "env": [{"value": "no name"}]}]}},
        ]
    ),
)
restore_paths = either(
    st.just("s3://kubetune-e2e/fuzz/none/checkpoint_000001"),
    st.sampled_from(
        ["s3://kubetune-e2e", "checkpoint_000001", "/etc/passwd", "s3://kubetune-e2e/x/cp_1"]
    ),
)
name_shapes = either(
    st.sampled_from(["short", "max", "dots"]), st.sampled_from(["over", "upper", "unicode"])
)


@dataclass
class Case:
    name: str
    body: dict[str, Any]
    real: bool  # runs a worker process (else pinned to no node)


@dataclass
class Tally:
    cases: list[Case] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, message)
    accepted: list[Case] = field(default_factory=list)


def make_name(shape: str, index: int) -> str:
    base = f"fz{index}"
    return {
        "short": base,
        "max": (base + "-" + "m" * 63)[:63],
        "over": base + "-" + "o" * 63,
        "upper": base.upper(),
        "dots": f"{base}.a.b",
        "unicode": f"{base}-ü",
    }[shape]


def sometimes(draw: st.DrawFn, one_in: int) -> bool:
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


@st.composite
def manifests(draw: st.DrawFn, index: int) -> Case:
    real = sometimes(draw, 4)
    spec: dict[str, Any] = {"trainable": draw(trainables)}
    config = draw(configs)
    spec["config"] = {**config, "sleep": 0.01} if isinstance(config, dict) else config
    stop = draw(stops)
    if real and not isinstance(stop, dict):
        stop = {}  # a real worker must end: no stop trains until the trainable says done
    if isinstance(stop, dict):
        stop["training_iteration"] = draw(stop_values)  # a real worker ends soon
    if real or not sometimes(draw, 10):
        spec["stop"] = stop
    if sometimes(draw, 2):
        spec["checkpoint"] = draw(checkpoints)
    storage: dict[str, Any] = {"uri": draw(storage_uris)}
    storage["endpointURL"] = draw(
        either(
            st.just(cluster_env()["AWS_ENDPOINT_URL"]),
            st.sampled_from(["http://u:p@host", "ftp://x", "", "http://127.0.0.1:1"]),
        )
    )
    if not sometimes(draw, 20):
        storage["secretRef"] = draw(secret_refs)
    spec["storage"] = storage
    if sometimes(draw, 4):
        spec["resources"] = draw(resources)
    if sometimes(draw, 4):
        spec["suspend"] = draw(either(st.booleans(), odd_values))
    if sometimes(draw, 4):
        spec["maxFailures"] = draw(either(st.integers(-1, 2), st.integers(-5, -2) | odd_values))
    if sometimes(draw, 6):
        spec["activeDeadlineSeconds"] = draw(either(st.integers(1, 600), odd_values))
    if sometimes(draw, 8):
        spec["restoreFrom"] = draw(restore_paths)
    if sometimes(draw, 10):
        spec["image"] = draw(st.sampled_from(["registry.example/kubetune:0.1", "", "UPPER CASE"]))
    if sometimes(draw, 15):
        spec[draw(st.sampled_from(["unknownField", "code", "status"]))] = draw(odd_values)
    template = draw(templates) if sometimes(draw, 4) else {}
    if not real:
        template = json.loads(json.dumps(template))
        template.setdefault("spec", {})["nodeSelector"] = dict(NOWHERE)
    if template:
        spec["template"] = template
    if sometimes(draw, 40):
        spec = draw(st.sampled_from([{}, {"storage": storage}]))  # required fields missing
    name = make_name(draw(name_shapes), index)
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainableJob",
        "metadata": {"name": name},
        "spec": spec,
    }
    return Case(name=name, body=body, real=real)


# --- watching every status the operator writes ----------------------------------


class StatusWatch:
    """Every status of the namespace's jobs, as the watch delivers each write."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._stopping = False
        self._watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stopping = True
        self._watch.stop()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            self._follow()
        except Exception:
            if not self._stopping:  # stopping cuts the stream mid-read
                raise

    def _follow(self) -> None:
        version = ""
        while not self._stopping:
            try:
                stream = self._watch.stream(
                    self.cluster.custom.list_namespaced_custom_object,
                    GROUP, VERSION, self.namespace, PLURAL,
                    resource_version=version, timeout_seconds=5,
                )  # fmt: skip
                for event in stream:
                    obj = event["object"]
                    version = obj["metadata"].get("resourceVersion", version)
                    if obj.get("status"):
                        self.seen.append((obj["metadata"]["name"], obj["status"]))
            except ApiException as exc:
                if exc.status != 410:
                    raise
                version = ""


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def list_jobs(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return {j["metadata"]["name"]: j for j in items["items"]}


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == ctype), {})


# --- the test -----------------------------------------------------------------------


def test_generated_manifests_are_refused_or_run_and_the_operator_holds(
    cluster: Cluster, job_ns: str, operator: OperatorProcess
) -> None:
    """50-90 s, and must: 200 generated manifests, each applied, and every one
    that is accepted followed until its status settles (35 run to Succeeded)."""
    print(f"fuzz: {EXAMPLES} cases, seed {SEED} (KUBETUNE_FUZZ_EXAMPLES, KUBETUNE_FUZZ_SEED)")
    assert operator.proc is not None
    op = psutil.Process(operator.proc.pid)
    log_start = operator.log_path.stat().st_size
    tally = Tally()
    counter = iter(range(1_000_000))
    serving(cluster, job_ns)

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def apply_one(data: st.DataObject) -> None:
        case = data.draw(manifests(next(counter)))
        tally.cases.append(case)
        try:
            cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, job_ns, PLURAL, case.body, field_validation="Strict"
            )
        except ApiException as exc:
            assert exc.status in (400, 422), (exc.status, exc.body, case.body)
            message = str(json.loads(exc.body or "{}").get("message") or exc.body)
            assert FIELD_NAMED.search(message), (message, case.body)
            tally.refused.append((case.name, message))
            return
        tally.accepted.append(case)

    t0, cpu0 = time.monotonic(), cpu_seconds(op)
    with StatusWatch(cluster, job_ns) as statuses:
        apply_one()
        outcomes = settle(cluster, job_ns, tally)
        wall, cpu = time.monotonic() - t0, cpu_seconds(op) - cpu0
        # With every job settled (terminal ones kept), a healthy operator is idle.
        idle0 = cpu_seconds(op)
        time.sleep(10)
        idle = cpu_seconds(op) - idle0
    assert operator.alive(), "the operator died during the fuzz run"

    bad = [(n, p) for n, s in statuses.seen for p in status_problems(s)]
    assert not bad, bad[:5]
    log = operator.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    # A reconcile that raises is retried with backoff forever: the job is stuck, unexplained.
    # (Only this namespace's: the operator also serves other tests' namespaces.)
    failing = [
        line for line in log.splitlines() if "reconcile failed" in line and f"[{job_ns}/" in line
    ]
    assert not failing, failing[:5]

    tally_line = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
    report_figure(
        f"fuzz manifests: {len(tally.cases)} cases (seed {SEED}): refused at apply "
        f"{len(tally.refused)}, {tally_line}; {len(statuses.seen)} statuses written, all valid; "
        f"operator CPU {cpu:.1f} s over {wall:.0f} s, {idle:.2f} s in 10 s idle after"
    )
    # Bounded: no hot loop while jobs come and go, none once they have settled.
    assert cpu < 20 + 0.3 * len(tally.cases), cpu
    assert idle < 2.0, idle


def serving(cluster: Cluster, namespace: str) -> None:
    """Wait until the operator serves the new namespace (a job there gets a
    status), so the figures below measure the cases, not the operator's start."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainableJob",
        "metadata": {"name": "sentinel"},
        "spec": {
            "trainable": "tests.e2e.trainables:Counter",
            "storage": {"uri": "s3://kubetune-e2e/fuzz", "secretRef": {"name": SECRET}},
            "template": {"spec": {"nodeSelector": dict(NOWHERE)}},
        },
    }
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    deadline = time.monotonic() + 180
    while not (list_jobs(cluster, namespace)["sentinel"].get("status") or {}).get("phase"):
        assert time.monotonic() < deadline, "the operator never served the test's namespace"
        time.sleep(0.5)
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "sentinel")


def settled(case: Case, job: dict[str, Any] | None) -> bool:
    """Has the job said where it is? Any status for a job pinned to no node; for a
    real run, its end, or a state that lasts (Suspended, or Pending for a named
    cause such as a missing Secret)."""
    status = (job or {}).get("status") or {}
    phase = status.get("phase")
    if not phase or not case.real:
        return bool(phase)
    reason = condition(status, "Running").get("reason")
    return phase in (*TERMINAL, "Suspended") or (
        phase == "Pending" and reason not in ("Initializing", "Starting")
    )


def settle(cluster: Cluster, namespace: str, tally: Tally) -> Counter[str]:
    """Wait for every accepted job's first status (and real runs' end, up to a
    bound); check each says where it is with a reason; delete what still runs.
    Returns the outcomes: terminal (by reason) and running (by phase)."""
    deadline = time.monotonic() + 120
    while True:
        jobs = list_jobs(cluster, namespace)
        waiting = [c.name for c in tally.accepted if not settled(c, jobs.get(c.name))]
        if not waiting:
            break
        if time.monotonic() > deadline:
            stuck = next(c for c in tally.accepted if c.name == waiting[0])
            status = jobs.get(stuck.name, {}).get("status")
            raise AssertionError(
                f"{len(waiting)} job(s) never said where they are, e.g. {stuck.name}: "
                f"status {status}; manifest {stuck.body}"
            )
        time.sleep(1)
    outcomes: Counter[str] = Counter()
    for case in tally.accepted:
        status = jobs.get(case.name, {}).get("status") or {}
        phase = status.get("phase")
        assert phase, f"{case.name} has no status after 120 s: {case.body}"
        running = condition(status, "Running")
        assert running.get("reason"), (case.name, status)
        if phase in TERMINAL:
            finished = condition(status, "Finished")
            cause = condition(status, "Complete" if phase == "Succeeded" else "Failed")
            assert finished.get("status") == "True" and cause.get("reason"), (case.name, status)
            assert phase == "Succeeded" or cause.get("message"), (case.name, status)
            outcomes[f"terminal {phase}/{cause['reason']}"] += 1
        else:
            outcomes[f"running {phase}/{running['reason']}"] += 1
            cluster.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, case.name
            )
    return outcomes
