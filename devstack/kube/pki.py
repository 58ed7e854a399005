"""Certificates and keys for the local control plane, generated with `cryptography` into the state dir.

One CA signs the API server's serving certificate and every client certificate; the API server trusts
client certificates from it (``--client-ca-file``): the user is the certificate's CN, its groups are the Os.
A separate key pair signs service-account tokens. Everything is written once and reused, so the
cluster's identity (and every kubeconfig handed out) survives `ferry dev down` / `up`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)  # a development cluster; its state dir is its lifetime


@dataclass(frozen=True)
class Client:
    """A client identity: user name (CN) and groups (O)."""

    name: str
    groups: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """For file names: system:kube-controller-manager -> system-kube-controller-manager."""
        return self.name.replace(":", "-")


ADMIN = Client("ferry-admin", ("system:masters",))
CONTROLLER_MANAGER = Client("system:kube-controller-manager")
# The simulated workload-status controller writes status of every workload kind: cluster-wide rights.
SIMULATED = Client("ferry-simulated-controller", ("system:masters",))
WORKER = Client("ferry-worker")  # bound to the ferry-worker ClusterRole only (examples/rbac/ferry-worker.yaml)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    """A certificate for `key`, valid from five minutes ago (clock skew) for VALIDITY."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _key_usage(ca: bool) -> x509.KeyUsage:
    """Digital signature for every certificate; a CA also signs certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=ca,
        crl_sign=ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def _serving_names() -> x509.SubjectAlternativeName:
    """The names the API server is reached by: loopback and the in-cluster `kubernetes` Service (10.96.0.1)."""
    return x509.SubjectAlternativeName(
        [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        ]
    )


class Pki:
    """The files under ``<state>/kube/pki``; ``ensure()`` creates what is missing and keeps what exists."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.root / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.root / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    def client_cert(self, client: Client) -> Path:
        return self.root / f"{client.slug}.crt"

    def client_key(self, client: Client) -> Path:
        return self.root / f"{client.slug}.key"

    def ensure(self, clients: tuple[Client, ...] = (ADMIN, CONTROLLER_MANAGER, SIMULATED, WORKER)) -> None:
        if not (self.ca_cert.is_file() and self.ca_key.is_file()):
            self._write_ca()
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        if not self.serving_cert.is_file():
            self._issue(
                ca,
                ca_key,
                self.serving_cert,
                self.serving_key,
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
                server=True,
            )
        for client in clients:
            if not self.client_cert(client).is_file():
                name = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in client.groups]
                name.append(x509.NameAttribute(NameOID.COMMON_NAME, client.name))
                self._issue(
                    ca, ca_key, self.client_cert(client), self.client_key(client), x509.Name(name), server=False
                )
        if not self.sa_key.is_file():
            # RSA, the algorithm every service-account token consumer accepts (RS256).
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write(
                self.sa_pub,
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )
            _write(self.sa_key, _pem_key(key), private=True)

    def _write_ca(self) -> None:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry-dev-ca")])
        cert = (
            _builder(name, name, key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(self.ca_key, _pem_key(key), private=True)
        _write(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _issue(
        ca: x509.Certificate,
        ca_key: ec.EllipticCurvePrivateKey,
        cert_path: Path,
        key_path: Path,
        subject: x509.Name,
        server: bool,
    ) -> None:
        key = _key()
        builder = (
            _builder(subject, ca.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(_serving_names(), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(key_path, _pem_key(key), private=True)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
