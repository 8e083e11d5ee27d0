"""Acceptance of in-cluster credentials on the local cluster: a pod gets a
token bound to it for its own service account, the official client's
load_incluster_config() works, and RBAC limits what the pod may do."""

# The typed client takes models and marks every field Optional; these tests pass
# manifests as dicts (the client validates them) and read fields the API always sets.
# mypy: disable-error-code="arg-type,union-attr,index"

from __future__ import annotations

import json

import pytest

from localcluster.testing import Cluster, python_pod

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

IN_POD = """
import base64, json, os
from kubernetes import client, config
from kubernetes.client.rest import ApiException

config.load_incluster_config()
v1 = client.CoreV1Api()
folder = '/var/run/secrets/kubernetes.io/serviceaccount'
ns = open(folder + '/namespace').read()
me = v1.read_namespaced_pod(os.environ['POD_NAME'], ns)
result = {'get_pod': me.metadata.name}
try:
    v1.list_namespaced_secret(ns)
    result['list_secrets'] = 'allowed'
except ApiException as err:
    result['list_secrets'] = err.status
payload = open(folder + '/token').read().split('.')[1]
claims = json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))
result['bound_to'] = claims['kubernetes.io']['pod']['name']
result['sa'] = claims['sub']
print(json.dumps(result))
"""


def test_pod_with_get_only_role_can_get_pods_but_not_list_secrets(
    cluster: Cluster, namespace: str
) -> None:
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    cluster.rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "get-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
    )
    cluster.rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader-gets-pods"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "get-pods",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    pod = python_pod(
        "asker",
        IN_POD,
        container={
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        },
        extra_spec={"serviceAccountName": "reader"},
    )
    cluster.core.create_namespaced_pod(namespace, pod)

    done = cluster.wait_pod_phase(namespace, "asker", ("Succeeded", "Failed"), timeout=90)

    logs = cluster.logs(namespace, "asker")
    assert done.status.phase == "Succeeded", logs
    result = json.loads(logs.strip().splitlines()[-1])
    assert result == {
        "get_pod": "asker",
        "list_secrets": 403,
        "bound_to": "asker",
        "sa": f"system:serviceaccount:{namespace}:reader",
    }


def test_pod_without_token_has_no_credentials(cluster: Cluster, namespace: str) -> None:
    code = "import os; print(os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'))"
    pod = python_pod("no-token", code, extra_spec={"automountServiceAccountToken": False})
    cluster.core.create_namespaced_pod(namespace, pod)

    cluster.wait_pod_phase(namespace, "no-token", ("Succeeded",))

    assert cluster.logs(namespace, "no-token").strip() == "False"
