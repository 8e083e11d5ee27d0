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
