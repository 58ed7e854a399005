"""mTLS to Temporal, for real: the dev server behind a TLS terminator that requires a client certificate from
our CA (the dev server itself has no TLS flags). Settings from FERRY_TEMPORAL_TLS_* and from a Temporal
environment-configuration profile; wrong files are one line naming the setting."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from workers.client import TemporalUnavailable, TLSSettingsError, connect, tls_config
from workers.settings import TemporalSettings, load_settings

SERVER_NAME = "temporal.ferry.test"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey | None,
    issuer: x509.Name | None,
    cn: str,
    *,
    ca: bool = False,
    dns: str | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer or _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return key, builder.sign(ca_key or key, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from another CA
    stranger_key: Path


def make_pki(root: Path) -> Pki:
    root.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _issue(None, None, "ferry test CA", ca=True)
    server_key, server = _issue(ca_key, ca.subject, SERVER_NAME, dns=SERVER_NAME, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client_key, client = _issue(ca_key, ca.subject, "ferry-worker", usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other_ca_key, other_ca = _issue(None, None, "someone else's CA", ca=True)
    stranger_key, stranger = _issue(other_ca_key, other_ca.subject, "mallory", usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    files = {
        "ca": ca.public_bytes(serialization.Encoding.PEM),
        "server_cert": server.public_bytes(serialization.Encoding.PEM),
        "server_key": _pem_key(server_key),
        "client_cert": client.public_bytes(serialization.Encoding.PEM),
        "client_key": _pem_key(client_key),
        "stranger_cert": stranger.public_bytes(serialization.Encoding.PEM),
        "stranger_key": _pem_key(stranger_key),
    }
    for name, data in files.items():
        (root / f"{name}.pem").write_bytes(data)
    return Pki(**{name: root / f"{name}.pem" for name in files})


@contextlib.asynccontextmanager
async def tls_terminator(pki: Pki, upstream: str) -> AsyncIterator[tuple[str, list[str]]]:
    """TLS (HTTP/2 by ALPN) on a free port, client certificate required and checked against our CA; the
    decrypted bytes go to the dev server's plain gRPC port. Yields (address, subjects of accepted clients)."""
    host, port = upstream.rsplit(":", 1)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.load_verify_locations(pki.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    accepted: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        accepted.append(str(dict(x[0] for x in peer.get("subject", ())).get("commonName")))
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(track, "127.0.0.1", 0, ssl=ctx)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}", accepted
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _mtls(address: str, pki: Pki, **kw: object) -> TemporalSettings:
    return TemporalSettings(
        address=address, tls_cert=pki.client_cert, tls_key=pki.client_key, tls_ca=pki.ca, tls_server_name=SERVER_NAME
    ).model_copy(update=kw)


async def test_mtls_from_ferry_settings_reaches_the_server(dev_env: WorkflowEnvironment, pki: Pki) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with tls_terminator(pki, upstream) as (address, accepted):
        env = {
            "FERRY_TEMPORAL_ADDRESS": address,
            "FERRY_TEMPORAL_TLS_CERT": str(pki.client_cert),
            "FERRY_TEMPORAL_TLS_KEY": str(pki.client_key),
            "FERRY_TEMPORAL_TLS_CA": str(pki.ca),
            "FERRY_TEMPORAL_TLS_SERVER_NAME": SERVER_NAME,
        }
        settings = load_settings(env=env, state_dir=pki.ca.parent / "no-stack").temporal
        client = await connect(settings)
        assert [n async for n in client.list_workflows("WorkflowId = 'nothing-has-this-id'")] == []
        assert "ferry-worker" in accepted


async def test_mtls_from_a_temporal_profile(dev_env: WorkflowEnvironment, pki: Pki, tmp_path: Path) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with tls_terminator(pki, upstream) as (address, accepted):
        config = tmp_path / "temporal.toml"
        config.write_text(f"""[profile.prod]
address = "{address}"
namespace = "default"
[profile.prod.tls]
server_name = "{SERVER_NAME}"
client_cert_path = "{pki.client_cert}"
client_key_path = "{pki.client_key}"
server_ca_cert_path = "{pki.ca}"
""")
        settings = load_settings(
            env={"TEMPORAL_CONFIG_FILE": str(config), "TEMPORAL_PROFILE": "prod"}, state_dir=tmp_path / "no-stack"
        ).temporal
        assert (settings.tls_cert, settings.tls_server_name) == (pki.client_cert, SERVER_NAME)
        await connect(settings)
        assert "ferry-worker" in accepted


@pytest.mark.parametrize("change", ["no client certificate", "a stranger's certificate", "wrong server name"])
async def test_the_server_refuses_what_is_not_our_client(dev_env: WorkflowEnvironment, pki: Pki, change: str) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with tls_terminator(pki, upstream) as (address, accepted):
        settings = {
            "no client certificate": _mtls(address, pki, tls_cert=None, tls_key=None),
            "a stranger's certificate": _mtls(address, pki, tls_cert=pki.stranger_cert, tls_key=pki.stranger_key),
            "wrong server name": _mtls(address, pki, tls_server_name="other.ferry.test"),
        }[change]
        with pytest.raises(TemporalUnavailable, match=f"cannot connect to {address}"):
            await asyncio.wait_for(connect(settings), 30)
        assert accepted == []


def test_tls_config_carries_the_files_bytes(pki: Pki) -> None:
    tls = tls_config(_mtls("x:1", pki))
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == pki.client_cert.read_bytes()
    assert tls.client_private_key == pki.client_key.read_bytes()
    assert tls.server_root_ca_cert == pki.ca.read_bytes()
    assert tls.domain == SERVER_NAME
    assert tls_config(TemporalSettings()) is False
    assert tls_config(TemporalSettings(tls=True)) is True


def test_a_wrong_tls_path_is_one_line_naming_the_setting(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TLSSettingsError) as err:
        tls_config(_mtls("x:1", pki, tls_key=tmp_path / "missing.key"))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("FERRY_TEMPORAL_TLS_KEY (tls_key): cannot read ") and "missing.key" in message
    (tmp_path / "not.pem").write_text("hello")
    with pytest.raises(TLSSettingsError, match=r"FERRY_TEMPORAL_TLS_CA \(tls_ca\): .*not.pem is not a PEM file"):
        tls_config(_mtls("x:1", pki, tls_ca=tmp_path / "not.pem"))
    with pytest.raises(TLSSettingsError, match="FERRY_TEMPORAL_TLS_CERT and FERRY_TEMPORAL_TLS_KEY go together"):
        tls_config(_mtls("x:1", pki, tls_key=None))
    assert pki.client_key.read_text() not in str(err.value)


def test_a_profile_with_inline_pem_data(pki: Pki, tmp_path: Path) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(f"""[profile.default]
address = "t.example:7233"
[profile.default.tls]
client_cert_data = '''{pki.client_cert.read_text()}'''
client_key_data = '''{pki.client_key.read_text()}'''
""")
    settings = load_settings(env={"TEMPORAL_CONFIG_FILE": str(config)}, state_dir=tmp_path / "no-stack").temporal
    assert settings.tls_key_pem is not None and "PRIVATE KEY" not in repr(settings)
    tls = tls_config(settings)
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == pki.client_cert.read_bytes() and tls.client_private_key == pki.client_key.read_bytes()
