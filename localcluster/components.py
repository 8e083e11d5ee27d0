"""Command lines and config files of the cluster's components, as pure
functions of the layout: what runs is readable in one place."""

from __future__ import annotations

import sys
from pathlib import Path

from localcluster.config import SERVICE_CIDR, Layout, NodeSpec

ADMIN_USER = "kubetune-admin"


def build_kubeconfig(server: str, ca_file: Path, token: str, user: str = ADMIN_USER) -> str:
    """A kubeconfig that verifies the server against our CA and sends a bearer token."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: kubetune-local
  cluster:
    server: {server}
    certificate-authority: {ca_file}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: kubetune-local
  context:
    cluster: kubetune-local
    user: {user}
    namespace: default
current-context: kubetune-local
"""


def build_token_file(admin_token: str) -> str:
    # token,user,uid,"group1,group2": the static token authenticator's format.
    return f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'


def etcd_argv(lay: Layout) -> list[str]:
    p = lay.ports
    return [
        str(lay.etcd_bin),
        "--name=kubetune",
        f"--data-dir={lay.etcd_data}",
        f"--listen-client-urls=http://127.0.0.1:{p.etcd_client}",
        f"--advertise-client-urls=http://127.0.0.1:{p.etcd_client}",
        f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
        f"--initial-cluster=kubetune=http://127.0.0.1:{p.etcd_peer}",
        # A throwaway test cluster: durability is not worth the fsync latency.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_argv(lay: Layout) -> list[str]:
    pki, p = lay.pki, lay.ports
    return [
        str(lay.k8s("kube-apiserver")),
        f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={p.apiserver}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--token-auth-file={lay.state / 'tokens.csv'}",
        "--authorization-mode=Node,RBAC",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--allow-privileged=true",
        # Node agents listen on 127.0.0.1 with certificates from our CA.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        # Endpoints may not hold loopback addresses, and pods reach the
        # apiserver through KUBERNETES_SERVICE_HOST=127.0.0.1 anyway.
        "--endpoint-reconciler-type=none",
        # A lost node's pods are evicted 10 s after it is found NotReady, not the
        # default 5 min, so a test sees a node loss end to end in under a minute
        # (tests/e2e/test_chaos_node.py). Pods that tolerate longer say so.
        "--default-not-ready-toleration-seconds=10",
        "--default-unreachable-toleration-seconds=10",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(lay: Layout) -> list[str]:
    pki = lay.pki
    return [
        str(lay.k8s("kube-controller-manager")),
        f"--kubeconfig={lay.kubeconfig}",
        f"--authentication-kubeconfig={lay.kubeconfig}",
        f"--authorization-kubeconfig={lay.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.ports.controller_manager}",
        "--leader-elect=false",
        "--use-service-account-credentials",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # A node whose agent stops renewing its lease is NotReady after 24 s (the
        # default is 50 s); the agents renew every 4 s (nodeagent/agent.py LEASE_EVERY_S),
        # so a busy agent still has six tries before its node is taken for lost.
        "--node-monitor-period=2s",
        "--node-monitor-grace-period=24s",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(lay: Layout) -> list[str]:
    return [
        str(lay.k8s("kube-scheduler")),
        f"--kubeconfig={lay.kubeconfig}",
        f"--authentication-kubeconfig={lay.kubeconfig}",
        f"--authorization-kubeconfig={lay.kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={lay.ports.scheduler}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def s3_argv(lay: Layout, access_key: str, secret_key: str, sidecar: bool) -> list[str]:
    argv = [
        str(lay.versitygw_bin),
        f"--port=127.0.0.1:{lay.ports.s3}",
        f"--access={access_key}",
        f"--secret={secret_key}",
        "--region=us-east-1",
        "--quiet",
        "posix",
    ]
    # The posix backend keeps object metadata in xattrs; where the filesystem
    # refuses them, it keeps them in a side folder instead.
    if sidecar:
        argv.append(f"--sidecar={lay.s3_sidecar}")
    return [*argv, str(lay.s3_data)]


def nodeagent_argv(lay: Layout, nodes: list[NodeSpec]) -> list[str]:
    spec = ",".join(f"{n.name}={n.gpus}" for n in nodes)
    return [
        sys.executable,
        "-m",
        "localcluster.nodeagent",
        f"--kubeconfig={lay.kubeconfig}",
        f"--nodes={spec}",
        f"--kubelet-port={lay.ports.kubelet_base}",
        f"--state={lay.pods}",
        f"--pki={lay.pki}",
        f"--repo={lay.repo}",
        f"--apiserver-port={lay.ports.apiserver}",
    ]
