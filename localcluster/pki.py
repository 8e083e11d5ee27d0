"""The cluster's certificates and keys: one CA, the apiserver's serving and
kubelet-client certificates, the service-account key pair and one serving
certificate per node agent. Elliptic-curve keys keep a cold `up` fast."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localcluster.config import CLUSTER_DOMAIN, SERVICE_IP

VALIDITY = datetime.timedelta(days=365)

APISERVER_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
)
APISERVER_IPS = ("127.0.0.1", SERVICE_IP)


@dataclass(frozen=True)
class Issuer:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    *,
    ca: bool,
) -> x509.CertificateBuilder:
    """What the CA and every leaf share: a fresh serial, VALIDITY from five
    minutes ago (clock skew), and the basic constraints and key usage of a CA
    or of a leaf."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=ca), critical=True)
    )


def build_ca(now: datetime.datetime) -> Issuer:
    key = _key()
    name = _name("kubetune-local-ca")
    cert = (
        _builder(name, name, key, now, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(key, cert)


def build_leaf(
    ca: Issuer,
    now: datetime.datetime,
    common_name: str,
    *,
    org: str | None = None,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = False,
    client: bool = False,
) -> Issuer:
    """A certificate signed by `ca` for a server (with SANs), a client, or both."""
    key = _key()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    builder = (
        _builder(_name(common_name, org), ca.cert.subject, key, now, ca=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issuer(key, builder.sign(ca.key, hashes.SHA256()))


def load_ca(pki: Path) -> Issuer:
    """The cluster's CA as `write_pki` left it (to sign a certificate later)."""
    key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{pki / 'ca.key'} is not an elliptic-curve key")
    return Issuer(key, x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes()))


def write_pair(folder: Path, issued: Issuer, stem: str = "tls") -> None:
    """`issued` as `folder/<stem>.crt` and `folder/<stem>.key` (the key private to us)."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_key(folder / f"{stem}.key", issued.key)
    _write_cert(folder / f"{stem}.crt", issued.cert)


def write_kubelet_pair(pki: Path, ca: Issuer, now: datetime.datetime, node: str) -> None:
    """The serving certificate of node `node`'s agent (its log endpoint)."""
    kubelet = build_leaf(
        ca,
        now,
        f"system:node:{node}",
        org="system:nodes",
        dns=(node, "localhost"),
        ips=("127.0.0.1",),
        server=True,
    )
    write_pair(pki, kubelet, stem=f"kubelet-{node}")


def write_pki(pki: Path, node_names: list[str]) -> None:
    """Writes every file the components read into `pki` (a fresh folder per cluster)."""
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = build_ca(now)
    _write_key(pki / "ca.key", ca.key)
    _write_cert(pki / "ca.crt", ca.cert)

    serving = build_leaf(
        ca, now, "kube-apiserver", dns=APISERVER_DNS, ips=APISERVER_IPS, server=True
    )
    _write_key(pki / "apiserver.key", serving.key)
    _write_cert(pki / "apiserver.crt", serving.cert)

    # The apiserver presents this to node agents when it proxies `kubectl logs`.
    kubelet_client = build_leaf(
        ca, now, "kube-apiserver-kubelet-client", org="system:masters", client=True
    )
    _write_key(pki / "apiserver-kubelet-client.key", kubelet_client.key)
    _write_cert(pki / "apiserver-kubelet-client.crt", kubelet_client.cert)

    sa_key = _key()
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    for node in node_names:
        write_kubelet_pair(pki, ca, now, node)
