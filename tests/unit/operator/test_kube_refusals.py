"""Which refusals of a worker pod end its job and which are tried again: the
API's answers to a pod create, as the operator's Kubernetes module sorts them."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from kubetune_operator import kube

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j-worker-1"}, "spec": {}}


def refusal(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="refused")
    exc.body = json.dumps({"kind": "Status", "code": status, "message": message})
    return exc


@pytest.fixture
def answer(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Makes the API answer pod creates with the given exception."""

    def install(exc: ApiException) -> None:
        class Core:
            def __init__(self, _api: Any) -> None:
                pass

            def create_namespaced_pod(self, *_: Any, **__: Any) -> None:
                raise exc

        monkeypatch.setattr(kube, "api", lambda: None)
        monkeypatch.setattr(kubernetes.client, "CoreV1Api", Core)

    return install


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (422, 'Pod "j-worker-1" is invalid: spec.containers[0].image: Required value'),
        (
            403,
            'pods "j-worker-1" is forbidden: violates PodSecurity "restricted:latest": '
            "runAsNonRoot != true (pod must not set securityContext.runAsNonRoot=false)",
        ),
    ],
    ids=["invalid", "pod-security"],
)
def test_hopeless_refusals_end_the_job(answer: Any, status: int, message: str) -> None:
    answer(refusal(status, message))
    with pytest.raises(kube.Rejected) as info:
        kube.create_pod("team", POD)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "message",
    [
        'pods is forbidden: User "system:serviceaccount:kt:kubetune" cannot create resource '
        '"pods" in API group "" in the namespace "team"',
        'pods "j-worker-1" is forbidden: exceeded quota: compute, requested: '
        "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: "
        "requests.nvidia.com/gpu=4",
    ],
    ids=["rbac", "quota"],
)
def test_other_forbidden_answers_are_retried(answer: Any, message: str) -> None:
    answer(refusal(403, message))
    with pytest.raises(ApiException):
        kube.create_pod("team", POD)


def test_an_existing_pod_is_success(answer: Any) -> None:
    answer(refusal(409, 'pods "j-worker-1" already exists'))
    assert kube.create_pod("team", POD) is False


# Custom objects (a sweep's trials, Kueue's Workloads) and reads: the same sorting.


class Response:
    """What the client returns with _preload_content=False."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()
        self.released = False

    def release_conn(self) -> None:
        self.released = True


@pytest.fixture
def objects(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Makes the API answer custom-object and Secret calls with `answer`: an
    exception to raise, or a body to return."""

    class Api:
        answer: ApiException | dict[str, Any] = {}
        calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        responses: list[Response] = []

        def __init__(self, _api: Any) -> None:
            pass

        def __getattr__(self, method: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Response:
                Api.calls.append((method, args, kwargs))
                if isinstance(Api.answer, ApiException):
                    raise Api.answer
                Api.responses.append(Response(Api.answer))
                return Api.responses[-1]

            return call

    monkeypatch.setattr(kube, "api", lambda: None)
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", Api)
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", Api)
    Api.calls, Api.responses = [], []
    return Api


TRIAL = {"metadata": {"name": "s-t0000", "namespace": "team"}, "spec": {}}
WORKLOAD = {"metadata": {"name": "trainablejob-j-01234567", "namespace": "team"}, "spec": {}}
WORKLOADS = ("kueue.x-k8s.io", "v1beta2", "workloads")


def test_a_trial_or_workload_that_exists_is_success(objects: Any) -> None:
    objects.answer = refusal(409, 'trainablejobs "s-t0000" already exists')
    assert kube.create_job(TRIAL) is None
    assert kube.create_object(WORKLOAD, *WORKLOADS) is None
    assert [c[0] for c in objects.calls] == ["create_namespaced_custom_object"] * 2
    assert objects.calls[1][1][:4] == ("kueue.x-k8s.io", "v1beta2", "team", "workloads")


def test_an_invalid_trial_or_workload_is_refused(objects: Any) -> None:
    objects.answer = refusal(422, "spec.storage.uri: Invalid value")
    with pytest.raises(kube.Rejected) as trial:
        kube.create_job(TRIAL)
    with pytest.raises(kube.Rejected) as workload:
        kube.create_object(WORKLOAD, *WORKLOADS)
    assert str(trial.value) == str(workload.value) == "spec.storage.uri: Invalid value"
    objects.answer = refusal(500, "etcd is away")
    with pytest.raises(ApiException):
        kube.create_job(TRIAL)


def test_a_created_trial_and_a_patched_one_come_back_with_the_connection_released(
    objects: Any,
) -> None:
    objects.answer = {**TRIAL, "status": {"phase": "Pending"}}
    assert kube.create_job(TRIAL) == objects.answer
    assert kube.patch_job("team", "s-t0000", {"spec": {"suspend": True}}) == objects.answer
    method, args, kwargs = objects.calls[1]
    assert method == "patch_namespaced_custom_object"
    assert args[2:] == ("team", "trainablejobs", "s-t0000", {"spec": {"suspend": True}})
    assert kwargs["_content_type"] == "application/merge-patch+json"
    assert all(r.released for r in objects.responses)


def test_a_changed_workload_is_a_conflict(objects: Any) -> None:
    body = {
        "kind": "Workload",
        "metadata": {"name": "w", "namespace": "team", "resourceVersion": "7"},
    }
    objects.answer = refusal(409, "the object has been modified")
    with pytest.raises(kube.Conflict, match=r"^Workload w changed"):
        kube.patch_object(body, {"spec": {"active": False}}, *WORKLOADS)
    objects.answer = {**body, "spec": {"active": False}}
    assert kube.patch_object(body, {"spec": {"active": False}}, *WORKLOADS) == objects.answer
    method, args, _ = objects.calls[-1]
    assert method == "patch_namespaced_custom_object"
    assert args == (
        *WORKLOADS[:2], "team", "workloads", "w",
        {"metadata": {"resourceVersion": "7"}, "spec": {"active": False}},
    )  # fmt: skip


def test_only_the_workload_read_is_deleted(objects: Any) -> None:
    kube.delete_object("team", "w", "uid-1", *WORKLOADS)
    method, args, kwargs = objects.calls[-1]
    assert (method, args) == (
        "delete_namespaced_custom_object",
        (*WORKLOADS[:2], "team", "workloads", "w"),
    )
    assert kwargs["body"] == {"preconditions": {"uid": "uid-1"}}
    objects.answer = refusal(409, "precondition failed: uid")
    kube.delete_object("team", "w", "uid-1", *WORKLOADS)  # a newer one of that name: not ours
    objects.answer = refusal(500, "etcd is away")
    with pytest.raises(ApiException):
        kube.delete_object("team", "w", "uid-1", *WORKLOADS)


def test_reads_of_what_is_not_there_are_none(objects: Any) -> None:
    objects.answer = refusal(404, "not found")
    assert kube.get_job("team", "j") is None
    assert kube.read_secret("team", "creds") is None
    assert kube.get_cluster_object("gpu", "kueue.x-k8s.io", "v1beta2", "resourceflavors") is None
    objects.answer = refusal(403, "forbidden")
    with pytest.raises(ApiException):
        kube.get_job("team", "j")
    objects.answer = {"data": {"AWS_ACCESS_KEY_ID": "aWQ="}}
    assert kube.read_secret("team", "creds") == {"AWS_ACCESS_KEY_ID": "id"}
