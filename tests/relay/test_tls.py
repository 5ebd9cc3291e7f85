"""Tests of hyco_relay.tls: the development CA, its server certificates, and real TLS handshakes."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyco_core.errors import HycoError
from hyco_relay.tls import (
    DevelopmentCertificates,
    TlsError,
    client_ssl_context,
    default_certificate_directory,
    ensure_development_certificates,
    server_ssl_context,
    trust_instructions,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
GREETING = b"hello over TLS"


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _snapshot(certificates: DevelopmentCertificates) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(certificates.directory.iterdir())}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _names(certificate: x509.Certificate) -> set[x509.GeneralName]:
    return set(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def _pem_key(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _self_signed(
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, *, algorithm: hashes.SHA256 | None
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "my own CA")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm)
    )


def _handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, server_hostname: str
) -> bytes:
    """Connect over 127.0.0.1, complete a TLS handshake and return what the server sent."""
    server_errors: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            connection.settimeout(10)
            try:
                with server_context.wrap_socket(connection, server_side=True) as tls:
                    tls.sendall(GREETING)
            except OSError as error:  # the client refusing the certificate ends the handshake
                server_errors.append(error)
            finally:
                connection.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client_context.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                return tls.recv(len(GREETING))
        finally:
            thread.join(10)


@pytest.fixture
def certificates(tmp_path: Path) -> DevelopmentCertificates:
    return ensure_development_certificates(tmp_path / "tls", now=NOW)


# --- creation ---------------------------------------------------------------------------------


def test_first_use_creates_a_private_directory_with_a_ca_and_a_server_certificate(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "home" / "tls"
    certificates = ensure_development_certificates(directory, now=NOW)

    assert certificates == DevelopmentCertificates(
        directory=directory,
        ca_certificate=directory / "ca.pem",
        certificate=directory / "server.pem",
        private_key=directory / "server-key.pem",
    )
    assert _mode(directory) == 0o700
    assert _mode(directory / "ca-key.pem") == 0o600
    assert _mode(certificates.private_key) == 0o600
    assert _mode(certificates.ca_certificate) == 0o644
    assert _mode(certificates.certificate) == 0o644
    assert sorted(path.name for path in directory.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "server-key.pem",
        "server.pem",
    ]


def test_the_ca_is_a_ten_year_p256_ca_that_can_only_sign_certificates(
    certificates: DevelopmentCertificates,
) -> None:
    [ca] = _certificates(certificates.ca_certificate)

    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "hyco development CA"
    assert ca.issuer == ca.subject
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature
    assert ca.not_valid_before_utc <= NOW
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert timedelta(days=3650) <= lifetime <= timedelta(days=3653)


def test_the_server_certificate_names_every_host_and_chains_to_the_ca(
    certificates: DevelopmentCertificates,
) -> None:
    [ca] = _certificates(certificates.ca_certificate)
    server, chained_ca = _certificates(certificates.certificate)

    assert chained_ca == ca
    server.verify_directly_issued_by(ca)
    assert _names(server) == {
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    }
    assert server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    )
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.not_valid_before_utc <= NOW
    assert server.not_valid_after_utc - server.not_valid_before_utc == timedelta(days=825)
    key = serialization.load_pem_private_key(certificates.private_key.read_bytes(), None)
    assert key.public_key() == server.public_key()


def test_a_relative_directory_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    certificates = ensure_development_certificates(Path("tls"), now=NOW)

    assert certificates.directory == tmp_path / "tls"
    assert certificates.ca_certificate.is_absolute()


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    ensure_development_certificates(tmp_path, now=NOW)

    assert _mode(tmp_path) == 0o755


def test_creating_the_ca_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hyco.relay.tls"):
        certificates = ensure_development_certificates(tmp_path, now=NOW)

    assert f"created the development CA {certificates.ca_certificate}" in caplog.text


# --- reuse and renewal ------------------------------------------------------------------------


def test_valid_files_are_reused(certificates: DevelopmentCertificates) -> None:
    before = _snapshot(certificates)

    again = ensure_development_certificates(certificates.directory, now=NOW + timedelta(days=30))
    fewer_hosts = ensure_development_certificates(
        certificates.directory, hosts=["LOCALHOST"], now=NOW
    )

    assert again == fewer_hosts == certificates
    assert _snapshot(certificates) == before


def test_new_hosts_get_a_new_server_certificate_from_the_same_ca(
    certificates: DevelopmentCertificates,
) -> None:
    before = _snapshot(certificates)

    ensure_development_certificates(
        certificates.directory,
        hosts=["relay.example.test", "*.servicebus.test", "10.1.2.3"],
        now=NOW,
    )

    after = _snapshot(certificates)
    assert after["ca.pem"] == before["ca.pem"]
    assert after["ca-key.pem"] == before["ca-key.pem"]
    assert after["server.pem"] != before["server.pem"]
    assert after["server-key.pem"] != before["server-key.pem"]
    server, _ = _certificates(certificates.certificate)
    assert _names(server) == {
        x509.DNSName("relay.example.test"),
        x509.DNSName("*.servicebus.test"),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
    }


@pytest.mark.parametrize("days", [826, 820])
def test_an_expired_or_expiring_server_certificate_is_replaced(
    certificates: DevelopmentCertificates, days: int
) -> None:
    before = _snapshot(certificates)
    later = NOW + timedelta(days=days)

    ensure_development_certificates(certificates.directory, now=later)

    after = _snapshot(certificates)
    assert after["ca.pem"] == before["ca.pem"]
    assert after["server.pem"] != before["server.pem"]
    server, _ = _certificates(certificates.certificate)
    assert server.not_valid_before_utc <= later < server.not_valid_after_utc


def test_an_expired_ca_is_replaced_with_a_warning(
    certificates: DevelopmentCertificates, caplog: pytest.LogCaptureFixture
) -> None:
    before = _snapshot(certificates)
    later = NOW + timedelta(days=3653)

    ensure_development_certificates(certificates.directory, now=later)

    after = _snapshot(certificates)
    assert after["ca.pem"] != before["ca.pem"]
    assert after["ca-key.pem"] != before["ca-key.pem"]
    [ca] = _certificates(certificates.ca_certificate)
    server, _ = _certificates(certificates.certificate)
    server.verify_directly_issued_by(ca)
    assert ca.not_valid_before_utc <= later
    assert "has expired" in caplog.text
    assert "must trust" in caplog.text


def test_a_server_certificate_never_outlives_its_ca(certificates: DevelopmentCertificates) -> None:
    [ca] = _certificates(certificates.ca_certificate)
    late = ca.not_valid_after_utc - timedelta(days=100)

    ensure_development_certificates(certificates.directory, now=late)

    server, _ = _certificates(certificates.certificate)
    assert server.not_valid_after_utc == ca.not_valid_after_utc


def test_a_naive_now_is_local_time(certificates: DevelopmentCertificates) -> None:
    before = _snapshot(certificates)
    naive_later = (NOW + timedelta(days=900)).astimezone().replace(tzinfo=None)

    ensure_development_certificates(certificates.directory, now=naive_later)

    assert _snapshot(certificates)["server.pem"] != before["server.pem"]


def test_now_defaults_to_the_current_time(tmp_path: Path) -> None:
    certificates = ensure_development_certificates(tmp_path)

    server, _ = _certificates(certificates.certificate)
    assert server.not_valid_before_utc <= datetime.now(timezone.utc) < server.not_valid_after_utc


def test_a_damaged_server_certificate_is_replaced(certificates: DevelopmentCertificates) -> None:
    certificates.certificate.write_bytes(b"not a certificate")

    ensure_development_certificates(certificates.directory, now=NOW)

    server, _ = _certificates(certificates.certificate)
    server.verify_directly_issued_by(_certificates(certificates.ca_certificate)[0])


def test_a_server_certificate_from_another_ca_is_replaced(
    certificates: DevelopmentCertificates, tmp_path: Path
) -> None:
    foreign = ensure_development_certificates(tmp_path / "other", now=NOW)
    certificates.certificate.write_bytes(foreign.certificate.read_bytes())
    certificates.private_key.write_bytes(foreign.private_key.read_bytes())

    ensure_development_certificates(certificates.directory, now=NOW)

    assert certificates.certificate.read_bytes() != foreign.certificate.read_bytes()
    server, _ = _certificates(certificates.certificate)
    server.verify_directly_issued_by(_certificates(certificates.ca_certificate)[0])


def test_a_server_certificate_without_its_ca_in_the_chain_is_replaced(
    certificates: DevelopmentCertificates,
) -> None:
    server, _ = _certificates(certificates.certificate)
    certificates.certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))

    ensure_development_certificates(certificates.directory, now=NOW)

    assert len(_certificates(certificates.certificate)) == 2


def test_an_unfinished_ca_is_replaced(tmp_path: Path) -> None:
    # The CA key is written first: a key without a certificate is left from an interrupted start.
    (tmp_path / "ca-key.pem").write_bytes(b"left over")

    certificates = ensure_development_certificates(tmp_path, now=NOW)

    [ca] = _certificates(certificates.ca_certificate)
    key = serialization.load_pem_private_key((tmp_path / "ca-key.pem").read_bytes(), None)
    assert key.public_key() == ca.public_key()


def test_a_ca_of_ones_own_issues_the_server_certificate(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    own_ca = _self_signed(key, algorithm=hashes.SHA256())
    (tmp_path / "ca.pem").write_bytes(own_ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca-key.pem").write_bytes(_pem_key(key))

    certificates = ensure_development_certificates(tmp_path, now=NOW)

    assert _certificates(certificates.ca_certificate) == [own_ca]
    server, chained = _certificates(certificates.certificate)
    assert chained == own_ca
    server.verify_directly_issued_by(own_ca)
    authority = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert authority == x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())


def test_the_server_certificate_refers_to_the_cas_key_identifier(
    certificates: DevelopmentCertificates,
) -> None:
    [ca] = _certificates(certificates.ca_certificate)
    server, _ = _certificates(certificates.certificate)

    authority = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    subject = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert authority.key_identifier == subject.digest


# --- a CA that cannot be used -----------------------------------------------------------------


def test_a_ca_without_its_key_is_an_error_that_says_how_to_start_over(
    certificates: DevelopmentCertificates,
) -> None:
    (certificates.directory / "ca-key.pem").unlink()

    with pytest.raises(TlsError, match=r"ca-key\.pem") as caught:
        ensure_development_certificates(certificates.directory, now=NOW)

    assert f"remove {certificates.directory} to start over" in str(caught.value)
    assert not (certificates.directory / "ca-key.pem").exists()


def test_a_ca_with_another_key_is_an_error(certificates: DevelopmentCertificates) -> None:
    ca_key = certificates.directory / "ca-key.pem"
    ca_key.write_bytes(_pem_key(ec.generate_private_key(ec.SECP256R1())))
    key_bytes = ca_key.read_bytes()

    with pytest.raises(TlsError, match="does not belong to the certificate") as caught:
        ensure_development_certificates(certificates.directory, now=NOW)

    assert key_bytes.decode() not in str(caught.value)
    assert ca_key.read_bytes() == key_bytes


def test_a_ca_whose_key_cannot_sign_certificates_is_an_error(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    own_ca = _self_signed(key, algorithm=None)
    (tmp_path / "ca.pem").write_bytes(own_ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ca-key.pem").write_bytes(_pem_key(key))

    with pytest.raises(TlsError, match="neither an EC nor an RSA key"):
        ensure_development_certificates(tmp_path, now=NOW)


# --- hosts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "",
        "-relay",
        "relay-",
        "a..b",
        "relay.",
        "exa mple.test",
        "under_score.test",
        "b\u00fccher.test",
        "\u212aelvin.test",
        "*",
        "a.*.test",
        "a" * 64,
        ".".join(["a" * 63] * 4),
        "fe80::1%eth0",
        "localhost\n",
    ],
)
def test_a_host_that_is_neither_a_name_nor_an_address_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(TlsError, match=r"cannot name|neither a host name"):
        ensure_development_certificates(tmp_path / "tls", hosts=[host], now=NOW)

    assert not (tmp_path / "tls").exists()


def test_hosts_must_not_be_a_single_string(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="not the string 'localhost'"):
        ensure_development_certificates(tmp_path, hosts="localhost", now=NOW)


def test_hosts_must_not_be_empty(tmp_path: Path) -> None:
    with pytest.raises(TlsError, match="at least one host"):
        ensure_development_certificates(tmp_path, hosts=[], now=NOW)


def test_hosts_are_named_once_each_in_lower_case(tmp_path: Path) -> None:
    certificates = ensure_development_certificates(
        tmp_path, hosts=["Relay.Example.TEST", "relay.example.test", "::1", "0:0::1"], now=NOW
    )

    server, _ = _certificates(certificates.certificate)
    assert list(server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
        x509.DNSName("relay.example.test"),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


@pytest.fixture(scope="module")
def shared_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hypothesis-tls")


_LABELS = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    host=st.one_of(
        st.text(max_size=30),
        st.lists(_LABELS, min_size=1, max_size=4).map(".".join),
        st.ip_addresses().map(str),
    )
)
def test_any_host_is_named_in_the_certificate_or_refused(shared_directory: Path, host: str) -> None:
    try:
        certificates = ensure_development_certificates(shared_directory, hosts=[host], now=NOW)
    except TlsError:
        return
    try:
        expected: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        expected = x509.DNSName(host.lower())
    server, _ = _certificates(certificates.certificate)
    assert expected in _names(server)
    before = _snapshot(certificates)
    ensure_development_certificates(shared_directory, hosts=[host], now=NOW)
    assert _snapshot(certificates) == before


# --- files that cannot be written -------------------------------------------------------------


def test_a_file_where_the_directory_should_be_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "tls").write_text("in the way")

    with pytest.raises(TlsError, match="cannot keep development certificates"):
        ensure_development_certificates(tmp_path / "tls", now=NOW)


def test_a_failed_write_is_an_error_and_leaves_no_temporary_file(
    certificates: DevelopmentCertificates,
) -> None:
    certificates.certificate.unlink()
    certificates.certificate.mkdir()

    with pytest.raises(TlsError, match="cannot keep development certificates"):
        ensure_development_certificates(certificates.directory, now=NOW)

    assert sorted(path.name for path in certificates.directory.iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "server-key.pem",
        "server.pem",
    ]


# --- handshakes -------------------------------------------------------------------------------


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1", "::1"])
def test_a_client_trusting_the_ca_completes_a_handshake(
    certificates: DevelopmentCertificates, server_hostname: str
) -> None:
    server_context = server_ssl_context(certificates.certificate, certificates.private_key)
    client_context = client_ssl_context(certificates.ca_certificate)
    # Python 3.13 verifies strictly by default; the certificates must pass that too.
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT

    assert _handshake(server_context, client_context, server_hostname) == GREETING


def test_the_contexts_require_tls_1_2_and_the_client_checks_the_host_name(
    certificates: DevelopmentCertificates,
) -> None:
    server_context = server_ssl_context(certificates.certificate, certificates.private_key)
    client_context = client_ssl_context(certificates.ca_certificate)

    assert server_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client_context.verify_mode == ssl.CERT_REQUIRED
    assert client_context.check_hostname


def test_a_client_not_trusting_the_ca_refuses_the_server(
    certificates: DevelopmentCertificates, tmp_path: Path
) -> None:
    server_context = server_ssl_context(certificates.certificate, certificates.private_key)
    other_ca = ensure_development_certificates(tmp_path / "other", now=NOW).ca_certificate

    for client_context in (ssl.create_default_context(), client_ssl_context(other_ca)):
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            _handshake(server_context, client_context, "localhost")


def test_a_client_refuses_a_host_the_certificate_does_not_name(
    certificates: DevelopmentCertificates,
) -> None:
    server_context = server_ssl_context(certificates.certificate, certificates.private_key)
    client_context = client_ssl_context(certificates.ca_certificate)

    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(server_context, client_context, "relay.example.test")


# --- certificate and key files that cannot be used --------------------------------------------


def test_a_key_that_does_not_match_the_certificate_is_refused(
    certificates: DevelopmentCertificates,
) -> None:
    ca_key = certificates.directory / "ca-key.pem"

    with pytest.raises(TlsError) as caught:
        server_ssl_context(certificates.certificate, ca_key)

    message = str(caught.value)
    assert isinstance(caught.value, HycoError)
    assert f"the private key {ca_key} does not belong to the certificate" in message
    assert str(certificates.certificate) in message
    assert ca_key.read_text() not in message


def test_a_missing_file_is_refused(certificates: DevelopmentCertificates, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"

    with pytest.raises(TlsError, match=f"cannot read the certificate {missing}: No such file"):
        server_ssl_context(missing, certificates.private_key)
    with pytest.raises(TlsError, match=f"cannot read the private key {missing}: No such file"):
        server_ssl_context(certificates.certificate, missing)
    with pytest.raises(TlsError, match=f"cannot read the certificate {missing}: No such file"):
        client_ssl_context(missing)


def test_files_that_are_not_pem_are_refused(
    certificates: DevelopmentCertificates, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")

    with pytest.raises(TlsError, match="holds no PEM certificate"):
        server_ssl_context(garbage, certificates.private_key)
    with pytest.raises(TlsError, match="holds no PEM certificate"):
        client_ssl_context(garbage)
    with pytest.raises(TlsError, match="holds no usable PEM private key"):
        server_ssl_context(certificates.certificate, garbage)
    with pytest.raises(TlsError, match="holds no usable PEM private key"):
        server_ssl_context(certificates.certificate, certificates.certificate)


def test_an_encrypted_key_is_refused_without_prompting_for_a_password(
    certificates: DevelopmentCertificates, tmp_path: Path
) -> None:
    key = serialization.load_pem_private_key(certificates.private_key.read_bytes(), None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )

    with pytest.raises(TlsError, match="is encrypted; give an unencrypted one"):
        server_ssl_context(certificates.certificate, encrypted)


def test_a_certificate_openssl_refuses_is_a_tls_error(tmp_path: Path) -> None:
    # Python's default security level refuses RSA keys shorter than 2048 bits.
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    certificate = tmp_path / "weak.pem"
    private_key = tmp_path / "weak-key.pem"
    certificate.write_bytes(
        _self_signed(key, algorithm=hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    private_key.write_bytes(_pem_key(key))

    with pytest.raises(TlsError, match="OpenSSL refuses the certificate"):
        server_ssl_context(certificate, private_key)


# --- where the files live, and how to trust them ----------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HYCO_HOME", raising=False)
    return tmp_path


def test_the_default_directory_is_under_the_home_directory(home: Path) -> None:
    assert default_certificate_directory() == home / ".hyco" / "tls"


def test_an_empty_hyco_home_is_ignored(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYCO_HOME", "")

    assert default_certificate_directory() == home / ".hyco" / "tls"


def test_hyco_home_moves_the_default_directory(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYCO_HOME", "~/state/hyco")

    assert default_certificate_directory() == home / "state" / "hyco" / "tls"


def test_trust_instructions_cover_python_curl_node_and_system_stores(tmp_path: Path) -> None:
    certificates = ensure_development_certificates(tmp_path / "my certs", now=NOW)
    quoted = f"'{certificates.ca_certificate}'"

    text = trust_instructions(certificates)

    assert f"SSL_CERT_FILE={quoted}" in text
    assert f"client_ssl_context(Path('{certificates.ca_certificate}'))" in text
    assert f"curl --cacert {quoted}" in text
    assert f"NODE_EXTRA_CA_CERTS={quoted}" in text
    assert f"sudo cp {quoted} /usr/local/share/ca-certificates/" in text
    assert "sudo update-ca-certificates" in text
    assert "security add-trusted-cert -d -r trustRoot" in text
    assert f"Keychains/System.keychain {quoted}" in text
    assert f"'{certificates.directory / 'ca-key.pem'}'" in text
    assert len(text.splitlines()) <= 20
