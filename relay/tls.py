"""TLS for the local relay: a development CA, the server certificate it issues, SSL contexts.

``hyco relay --tls`` serves wss:// and https:// with certificate and key files the user gives, or
else with a server certificate issued by a development CA that this module creates on first use.
The files live in one directory (by default ``$HYCO_HOME/tls`` or ``~/.hyco/tls``)::

    ca.pem          the CA certificate: what clients trust
    ca-key.pem      the CA key (0600), kept to issue server certificates for new hosts
    server.pem      the server certificate, then the CA certificate
    server-key.pem  the server key (0600)

Files that are still valid are reused, so clients trust the CA once. The server certificate is
issued again when it expires or does not name a requested host; the CA is created again only when
it expires. A CA of one's own (EC or RSA key) may be put in place of ``ca.pem`` and ``ca-key.pem``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import shlex
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hyco_core.errors import HycoError

__all__ = [
    "DevelopmentCertificates",
    "TlsError",
    "client_ssl_context",
    "default_certificate_directory",
    "ensure_development_certificates",
    "server_ssl_context",
    "trust_instructions",
]

logger = logging.getLogger("hyco.relay.tls")

_CA_CERTIFICATE = "ca.pem"
_CA_PRIVATE_KEY = "ca-key.pem"
_SERVER_CERTIFICATE = "server.pem"
_SERVER_PRIVATE_KEY = "server-key.pem"

_CA_NAME = "hyco development CA"
_SERVER_NAME = "hyco development server"
_CA_LIFETIME = timedelta(days=3652)
# Apple's clients reject server certificates valid for longer, even under a CA the user added.
_SERVER_LIFETIME = timedelta(days=825)
# Certificates start a little in the past so that a client whose clock lags still accepts them.
_BACKDATE = timedelta(hours=1)
# A certificate this close to its end is replaced, so that a relay started now keeps working.
_RENEWAL_MARGIN = timedelta(days=7)

_HOST_NAME_LIMIT = 253
# ASCII only, with no IGNORECASE: under it, [a-z] also matches the Kelvin sign.
_HOST_NAME = re.compile(
    r"(?:\*\.)?(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*"
)

_IssuerKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class TlsError(HycoError):
    """A certificate or key cannot be read, created or used; the message says which and why.

    Messages name files and hosts, never key material.
    """


@dataclass(frozen=True, kw_only=True, slots=True)
class DevelopmentCertificates:
    """Where the development CA and the server certificate it issued are stored."""

    directory: Path
    ca_certificate: Path
    certificate: Path
    private_key: Path


def default_certificate_directory() -> Path:
    """Return ``$HYCO_HOME/tls`` if ``HYCO_HOME`` is set, else ``~/.hyco/tls``."""
    home = os.environ.get("HYCO_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".hyco"
    return base / "tls"


def ensure_development_certificates(
    directory: Path,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    now: datetime | None = None,
) -> DevelopmentCertificates:
    """Return the development certificates in ``directory``, creating what is missing or stale.

    The directory is created (mode 0700) if needed. A CA is created if there is none or it
    expires within a week; a server certificate is issued if there is none, it expires within a
    week, it was not issued by the CA, or it does not name every one of ``hosts`` (DNS names,
    ``*.`` wildcards and IP addresses). ``now`` defaults to the current time; a naive ``now`` is
    local time.

    Raises :class:`TlsError` for an invalid host, a CA that exists but cannot be used, or a
    directory that cannot be written.
    """
    names = _subject_alternative_names(hosts)
    moment = datetime.now(timezone.utc) if now is None else now.astimezone(timezone.utc)
    directory = directory.absolute()
    certificates = DevelopmentCertificates(
        directory=directory,
        ca_certificate=directory / _CA_CERTIFICATE,
        certificate=directory / _SERVER_CERTIFICATE,
        private_key=directory / _SERVER_PRIVATE_KEY,
    )
    try:
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode passes through the umask; the directory must be exactly private.
            directory.chmod(0o700)
        ca_certificate, ca_key = _ensure_ca(
            certificates.ca_certificate, directory / _CA_PRIVATE_KEY, moment
        )
        if not _server_certificate_is_usable(certificates, ca_certificate, names, moment):
            _issue_server_certificate(certificates, ca_certificate, ca_key, names, moment)
    except OSError as error:
        raise TlsError(f"cannot keep development certificates in {directory}: {error}") from error
    return certificates


def server_ssl_context(certificate: Path, private_key: Path) -> ssl.SSLContext:
    """Return a server-side context (TLS 1.2 or later) presenting ``certificate``.

    ``certificate`` is a PEM file holding the server's certificate first, then any intermediate
    certificates; ``private_key`` is the server's unencrypted PEM key. Raises :class:`TlsError`
    if either cannot be read or parsed, or if the key does not belong to the certificate.
    """
    _load_pair(certificate, private_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, private_key)
    except ssl.SSLError as error:
        raise TlsError(
            f"OpenSSL refuses the certificate {certificate} with the key {private_key}: {error}"
        ) from error
    return context


def client_ssl_context(ca_certificate: Path) -> ssl.SSLContext:
    """Return a client-side context (TLS 1.2 or later) trusting the CAs in ``ca_certificate`` only.

    It checks the server's certificate and host name, as browsers do. Raises :class:`TlsError`
    if the file cannot be read or holds no PEM certificate.
    """
    authorities = _load_certificates(ca_certificate)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(
        cadata=b"".join(
            authority.public_bytes(serialization.Encoding.DER) for authority in authorities
        )
    )
    return context


def trust_instructions(certificates: DevelopmentCertificates) -> str:
    """Explain, in a few lines, how to make clients trust the development CA."""
    ca = shlex.quote(str(certificates.ca_certificate))
    ca_argument = f"Path({str(certificates.ca_certificate)!r})"
    ca_key = shlex.quote(str(certificates.directory / _CA_PRIVATE_KEY))
    return f"""\
Clients trust the relay's wss:// and https:// addresses once they trust its CA, {ca}:
- Python: SSL_CERT_FILE={ca} (read by ssl.create_default_context(), so by websockets too;
  it replaces the default CA file), or pass client_ssl_context({ca_argument})
  from hyco_relay.tls as the SSL context
- requests: REQUESTS_CA_BUNDLE={ca}
- curl: curl --cacert {ca} https://...
- Node.js: NODE_EXTRA_CA_CERTS={ca}
- Debian, Ubuntu (every program):
    sudo cp {ca} /usr/local/share/ca-certificates/hyco-development-ca.crt
    sudo update-ca-certificates
- macOS (every program):
    sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}
Its key, {ca_key}, can sign a certificate for any site: keep it to yourself.
"""


def _subject_alternative_names(hosts: Sequence[str]) -> tuple[x509.GeneralName, ...]:
    if isinstance(hosts, str):
        raise TlsError(f"hosts must be a sequence of host names, not the string {hosts!r}")
    names = tuple(dict.fromkeys(_subject_alternative_name(host) for host in hosts))
    if not names:
        raise TlsError("a server certificate needs at least one host name or IP address")
    return names


def _subject_alternative_name(host: str) -> x509.GeneralName:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if len(host) > _HOST_NAME_LIMIT or _HOST_NAME.fullmatch(host) is None:
            raise TlsError(
                f"{host!r} is neither a host name nor an IP address "
                "(write an internationalized name in its xn-- form)"
            ) from None
        return x509.DNSName(host.lower())
    if "%" in host:
        raise TlsError(f"{host!r} has a zone index, which a certificate cannot name")
    return x509.IPAddress(address)


def _ensure_ca(
    certificate_path: Path, key_path: Path, now: datetime
) -> tuple[x509.Certificate, _IssuerKey]:
    # The key is written before the certificate, so a CA without a certificate was never
    # finished and may be replaced, while one without its key is the user's to repair.
    if certificate_path.exists():
        try:
            chain, key = _load_pair(certificate_path, key_path)
        except TlsError as error:
            raise TlsError(
                f"the development CA cannot be used: {error}. Repair it, or remove "
                f"{certificate_path.parent} to start over with a new CA, which clients "
                "will then have to trust again"
            ) from error
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise TlsError(f"the development CA's key {key_path} is neither an EC nor an RSA key")
        if _is_current(chain[0], now):
            return chain[0], key
        logger.warning(
            "the development CA %s has expired: creating a new one, which clients must trust",
            certificate_path,
        )
    return _create_ca(certificate_path, key_path, now)


def _create_ca(
    certificate_path: Path, key_path: Path, now: datetime
) -> tuple[x509.Certificate, _IssuerKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hyco"),
            x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME),
        ]
    )
    not_before = now - _BACKDATE
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + _CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_file(key_path, _private_key_pem(key), mode=0o600)
    _write_file(certificate_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    logger.info("created the development CA %s; clients must trust it", certificate_path)
    return certificate, key


def _server_certificate_is_usable(
    certificates: DevelopmentCertificates,
    ca_certificate: x509.Certificate,
    names: tuple[x509.GeneralName, ...],
    now: datetime,
) -> bool:
    try:
        chain, _ = _load_pair(certificates.certificate, certificates.private_key)
        chain[0].verify_directly_issued_by(ca_certificate)
    except (TlsError, ValueError, TypeError, InvalidSignature):
        return False
    return (
        chain[1:] == [ca_certificate]
        and _is_current(chain[0], now)
        and set(names) <= _names_in(chain[0])
    )


def _issue_server_certificate(
    certificates: DevelopmentCertificates,
    ca_certificate: x509.Certificate,
    ca_key: _IssuerKey,
    names: tuple[x509.GeneralName, ...],
    now: datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = now - _BACKDATE
    certificate = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hyco"),
                    x509.NameAttribute(NameOID.COMMON_NAME, _SERVER_NAME),
                ]
            )
        )
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_before + _SERVER_LIFETIME, ca_certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_certificate, ca_key), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = certificate.public_bytes(serialization.Encoding.PEM) + ca_certificate.public_bytes(
        serialization.Encoding.PEM
    )
    _write_file(certificates.private_key, _private_key_pem(key), mode=0o600)
    _write_file(certificates.certificate, chain, mode=0o644)
    logger.info("issued the development server certificate %s", certificates.certificate)


def _authority_key_identifier(
    ca_certificate: x509.Certificate, ca_key: _IssuerKey
) -> x509.AuthorityKeyIdentifier:
    # Chain building matches this against the CA's own identifier, whichever way it was computed.
    try:
        identifier = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(identifier.value)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _is_current(certificate: x509.Certificate, now: datetime) -> bool:
    return (
        certificate.not_valid_before_utc <= now
        and now + _RENEWAL_MARGIN < certificate.not_valid_after_utc
    )


def _names_in(certificate: x509.Certificate) -> set[x509.GeneralName]:
    return {
        name
        for extension in certificate.extensions
        if isinstance(extension.value, x509.SubjectAlternativeName)
        for name in extension.value
    }


def _load_pair(
    certificate: Path, private_key: Path
) -> tuple[list[x509.Certificate], PrivateKeyTypes]:
    chain = _load_certificates(certificate)
    key = _load_private_key(private_key)
    if _public_key_der(chain[0].public_key()) != _public_key_der(key.public_key()):
        raise TlsError(
            f"the private key {private_key} does not belong to the certificate {certificate} "
            "(whose first certificate must be the one the key signs for)"
        )
    return chain, key


def _public_key_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_certificates(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise TlsError(
            f"the certificate {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from error


def _load_private_key(path: Path) -> PrivateKeyTypes:
    data = _read(path, "private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError as error:
        raise TlsError(
            f"the private key {path} is encrypted; give an unencrypted one "
            f"(openssl pkey -in {shlex.quote(str(path))} -out unencrypted-key.pem)"
        ) from error
    except (ValueError, UnsupportedAlgorithm) as error:
        raise TlsError(
            f"the private key {path} holds no usable PEM private key (-----BEGIN ... KEY-----)"
        ) from error


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsError(f"cannot read the {what} {path}: {error.strerror or error}") from error


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_file(path: Path, data: bytes, *, mode: int) -> None:
    # A new file replaces the old one at once, so a relay starting meanwhile never reads half a
    # file; mkstemp creates it readable by its owner only, before any key is written into it.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
