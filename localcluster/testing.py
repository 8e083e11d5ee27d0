"""Helpers of the end-to-end tests on the local cluster (also for other
projects' tests): the Cluster handle the `cluster` fixture returns, pod
manifests that run Python, and polling with a readable failure."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

T = TypeVar("T")


def read_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines of .cluster/env ($PATH expanded from ours)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            value = shlex.split(value)[0] if value else ""
            found[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    return found


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 60, every: float = 0.3
) -> T:
    """Polls `probe` until it returns something truthy; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class Cluster:
    """The running local cluster, as the tests see it."""

    repo: Path
    kubeconfig: Path
    kubectl_path: Path
    helm_path: Path | None
    # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for boto3; and our environment
    # plus .cluster/env, for subprocesses. Both hold the S3 secret key, so both
    # stay out of repr, which pytest prints for every failing test using them.
    s3_env: dict[str, str] = field(repr=False)
    env: dict[str, str] = field(repr=False)
    api: client.ApiClient = field(repr=False)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Runs the cluster's kubectl; with check, a non-zero exit fails the test readably."""
        proc = subprocess.run(
            [str(self.kubectl_path), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def create_namespace(self, name: str) -> None:
        """Creates a test namespace and waits until pods can run there (its
        default service account and CA configmap exist)."""
        self.core.create_namespace(
            {"metadata": {"name": name, "labels": {"kubetune.io/e2e": "true"}}}
        )

        def ready() -> bool:
            try:
                self.core.read_namespaced_service_account("default", name)
                self.core.read_namespaced_config_map("kube-root-ca.crt", name)
            except ApiException as err:
                if err.status == 404:
                    return False
                raise
            return True

        wait_for(f"namespace {name}'s default service account", ready, timeout=30)

    def apply(self, manifest: str, namespace: str) -> None:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)

    def pod(self, namespace: str, name: str) -> Any:
        return self.core.read_namespaced_pod(name, namespace)

    def wait_pod_phase(
        self, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 60
    ) -> Any:
        def probe() -> Any:
            pod = self.pod(namespace, name)
            return pod if pod.status and pod.status.phase in phases else None

        return wait_for(f"pod {namespace}/{name} to be {'/'.join(phases)}", probe, timeout)

    def wait_pod_gone(self, namespace: str, name: str, timeout: float = 60) -> float:
        """Waits until the pod no longer exists; returns when that was seen (monotonic)."""

        def probe() -> float | None:
            try:
                self.core.read_namespaced_pod(name, namespace)
            except ApiException as err:
                if err.status == 404:
                    return time.monotonic()
                raise
            return None

        return wait_for(f"pod {namespace}/{name} to be deleted", probe, timeout, every=0.1)

    def logs(self, namespace: str, pod: str, *extra: str) -> str:
        return self.kubectl("logs", "-n", namespace, pod, *extra).stdout

    def s3(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_env["AWS_ENDPOINT_URL"],
            aws_access_key_id=self.s3_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.s3_env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.s3_env["AWS_DEFAULT_REGION"],
        )


def python_pod(
    name: str,
    code: str,
    *,
    restart: str = "Never",
    env: dict[str, str] | None = None,
    extra_spec: dict[str, Any] | None = None,
    container: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Pod manifest whose one container runs `python -c code` (the image is ignored)."""
    ctr: dict[str, Any] = {
        "name": "main",
        "image": "kubetune-local",
        "command": ["python", "-c", code],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        **(container or {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": restart, "containers": [ctr], **(extra_spec or {})},
    }
