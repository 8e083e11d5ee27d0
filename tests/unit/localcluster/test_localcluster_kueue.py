"""Kueue on the local cluster (localcluster/addons/kueue.py) without a cluster or a
Kueue binary: the Configuration it writes, the command it runs, the
certificate it makes, and the GPU label the node agent gives its nodes."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import yaml
from cryptography import x509

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # localcluster lives at the repo root, outside the package dirs
    sys.path.insert(0, str(REPO))

from localcluster.addons import kueue  # noqa: E402
from localcluster.config import Layout, Ports  # noqa: E402
from localcluster.nodeagent.node import GPU_PRESENT_LABEL, build_node, node_labels  # noqa: E402
from localcluster.pki import write_pki  # noqa: E402

# The JSON names of Kueue v0.17.0's Configuration (apis/config/v1beta2), which
# Kueue decodes strictly: any other key stops it at start.
KNOWN_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "manageJobsWithoutQueueName",
    "managedJobsNamespaceSelector",
    "internalCertManagement",
    "waitForPodsReady",
    "clientConnection",
    "integrations",
    "multiKueue",
    "fairSharing",
    "admissionFairSharing",
    "resources",
    "featureGates",
    "objectRetentionPolicies",
    "visibilityServer",
    "webhook",
    "leaderElection",
    "metrics",
    "health",
    "pprofBindAddress",
    "controller",
    "tls",
}


def _lay(tmp_path: Path, offset: int = 0) -> Layout:
    return Layout(
        repo=REPO, cache=tmp_path / "cache", state=tmp_path / "state", ports=Ports().shifted(offset)
    )


def test_the_configuration_runs_kueue_alone_on_loopback(tmp_path: Path) -> None:
    lay = _lay(tmp_path)
    cfg = kueue.configuration(lay)
    assert cfg["apiVersion"] == "config.kueue.x-k8s.io/v1beta2"
    assert cfg["kind"] == "Configuration"
    assert set(cfg) <= KNOWN_KEYS
    assert cfg["leaderElection"] == {"leaderElect": False}
    assert cfg["internalCertManagement"] == {"enable": False}
    assert cfg["webhook"] == {
        "host": "127.0.0.1",
        "port": 19443,
        "certDir": str(lay.state / "kueue" / "certs"),
    }
    assert cfg["health"] == {"healthProbeBindAddress": "127.0.0.1:19444"}
    assert cfg["metrics"] == {"bindAddress": "127.0.0.1:19445"}
    # no visibility API server: it would need an APIService and a certificate of its own
    assert cfg["featureGates"] == {"VisibilityOnDemand": False}
    assert cfg["namespace"] == "kueue-system"  # not read from a service account file


def test_integrations_are_batch_jobs_and_trainable_jobs(tmp_path: Path) -> None:
    integrations = kueue.configuration(_lay(tmp_path))["integrations"]
    assert integrations == {
        "frameworks": ["batch/job"],
        "externalFrameworks": ["TrainableJob.v1alpha1.kubetune.io"],
    }
    # Kueue parses external frameworks as Kind.version.group
    kind, version, group = integrations["externalFrameworks"][0].split(".", 2)
    assert (kind, version, group) == ("TrainableJob", "v1alpha1", "kubetune.io")


def test_ports_move_with_the_cluster(tmp_path: Path) -> None:
    cfg = kueue.configuration(_lay(tmp_path, offset=1000))
    assert cfg["webhook"]["port"] == 20443
    assert cfg["health"]["healthProbeBindAddress"] == "127.0.0.1:20444"
    assert cfg["metrics"]["bindAddress"] == "127.0.0.1:20445"


def test_kueue_ports_clash_with_no_other_port_of_the_cluster() -> None:
    p = Ports()
    ours = {p.kueue_webhook, p.kueue_health, p.kueue_metrics}
    others = {p.etcd_client, p.etcd_peer, p.apiserver, p.controller_manager, p.scheduler, p.s3}
    others |= set(range(p.kubelet_base, p.kubelet_base + 64))
    assert len(ours) == 3 and not ours & others


def test_a_second_cluster_shifted_by_1000_shares_no_port_with_the_first() -> None:
    # tests/e2e/test_cluster_up.py runs one beside the first with KUBETUNE_PORT_OFFSET=1000
    first, second = Ports(), Ports().shifted(1000)
    fields = [f for f in first.__dataclass_fields__ if f != "kubelet_base"]
    a = {getattr(first, f) for f in fields} | set(
        range(first.kubelet_base, first.kubelet_base + 16)
    )
    b = {getattr(second, f) for f in fields}
    b |= set(range(second.kubelet_base, second.kubelet_base + 16))
    assert not a & b


def test_the_rendered_file_round_trips(tmp_path: Path) -> None:
    lay = _lay(tmp_path)
    assert yaml.safe_load(kueue.render_configuration(lay)) == kueue.configuration(lay)


def test_kueue_runs_with_the_admin_kubeconfig_and_our_config(tmp_path: Path) -> None:
    lay = _lay(tmp_path)
    argv = kueue.kueue_argv(lay, Path("/cache/kueue"))
    assert argv[0] == "/cache/kueue"
    assert f"--config={lay.state / 'kueue' / 'config.yaml'}" in argv
    assert f"--kubeconfig={lay.kubeconfig}" in argv


def test_the_metrics_certificate_is_mounted_where_kueue_looks(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    argv = kueue.in_mount_namespace(["/cache/kueue", "--config=c"], certs)
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    script = argv[argv.index("-c") + 1]
    assert 'mount --bind "$1" /etc/kueue/metrics/certs' in script
    assert script.endswith('exec "$@"')
    # $0, then $1 = the certificate folder, then Kueue's own command
    assert argv[argv.index("-c") + 2 :] == ["kueue", str(certs), "/cache/kueue", "--config=c"]


def test_crd_names_follow_the_file_names() -> None:
    path = Path("config/components/crd/bases/kueue.x-k8s.io_workloads.yaml")
    assert kueue.crd_name(path) == "workloads.kueue.x-k8s.io"
    assert (
        kueue.crd_name(Path("kueue.x-k8s.io_workloadpriorityclasses.yaml"))
        == "workloadpriorityclasses.kueue.x-k8s.io"
    )


def test_the_serving_certificate_is_for_loopback_and_signed_by_the_cluster_ca(
    tmp_path: Path,
) -> None:
    lay = _lay(tmp_path)
    write_pki(lay.pki, [])
    kueue.write_certificate(lay)
    folder = lay.state / "kueue" / "certs"
    cert = x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((lay.pki / "ca.crt").read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert (folder / "tls.key").stat().st_mode & 0o077 == 0
    # a second start keeps the certificate
    before = (folder / "tls.crt").read_bytes()
    kueue.write_certificate(lay)
    assert (folder / "tls.crt").read_bytes() == before


def test_nodes_with_gpus_are_labelled_as_gpu_feature_discovery_does() -> None:
    assert GPU_PRESENT_LABEL == "nvidia.com/gpu.present"
    assert node_labels("kt-gpu2", 2)[GPU_PRESENT_LABEL] == "true"
    assert GPU_PRESENT_LABEL not in node_labels("kt-cpu", 0)
    node = build_node("kt-gpu1", gpus=1)
    assert node["metadata"]["labels"][GPU_PRESENT_LABEL] == "true"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "kt-gpu1"
    assert GPU_PRESENT_LABEL not in build_node("kt-cpu")["metadata"]["labels"]
