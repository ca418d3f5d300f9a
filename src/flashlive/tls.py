"""Local TLS material for the flashlive server.

The official Gemini Python SDK always opens Live sessions over ``wss://`` when
it is configured with an API key, so a drop-in local server has to speak TLS
even on loopback.  On first start we create a small local certificate
authority under ``<data_dir>/tls/`` and issue a server certificate from it;
clients trust the server by pointing ``SSL_CERT_FILE`` (or ``cafile=``) at
``ca.pem``.  Users may instead supply their own certificate and key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsFiles", "ca_path", "ensure_local_tls", "server_ssl_context", "user_tls"]

_CA_DAYS = 3650
_SERVER_DAYS = 730
_RENEW_MARGIN = dt.timedelta(days=30)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files the server uses; ``ca`` is None for user-supplied certs."""

    cert: Path
    key: Path
    ca: Path | None


def ca_path(data_dir: Path) -> Path:
    """Path of the local CA certificate (whether or not it exists yet)."""
    return data_dir / "tls" / "ca.pem"


def _write_atomic(path: Path, data: bytes, *, private: bool) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir and os.replace."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _create_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"flashlive local CA {secrets.token_hex(4)}")]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_atomic(key_path, _key_pem(key), private=True)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key


def _split_names(
    hostnames: Sequence[str], addresses: Sequence[str]
) -> tuple[set[str], set[IPAddress]]:
    dns: set[str] = set()
    ips = {ipaddress.ip_address(a) for a in addresses}
    for host in hostnames:
        try:
            ips.add(ipaddress.ip_address(host))
        except ValueError:
            dns.add(host.lower())
    return dns, ips


def _server_cert_ok(
    cert_path: Path, key_path: Path, ca: x509.Certificate, dns: set[str], ips: set[IPAddress]
) -> bool:
    """True if the server cert is from ``ca``, fresh, matches its key and covers all names."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = _load_ec_key(key_path)
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    if cert.not_valid_after_utc - _RENEW_MARGIN <= _now():
        return False
    if cert.public_key() != key.public_key():
        return False
    have_dns = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    have_ips = set(san.get_values_for_type(x509.IPAddress))
    return dns <= have_dns and ips <= have_ips


def _issue_server(
    cert_path: Path,
    key_path: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    dns: set[str],
    ips: set[IPAddress],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cn = sorted(dns)[0] if dns else str(sorted(ips, key=str)[0]) if ips else "localhost"
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in sorted(dns)]
    sans += [x509.IPAddress(ip) for ip in sorted(ips, key=str)]
    now = _now()
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    # Key first: a crash in between leaves a cert/key mismatch, which is detected and re-issued.
    _write_atomic(key_path, _key_pem(key), private=True)
    _write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False)


def ensure_local_tls(
    data_dir: Path,
    hostnames: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = ("127.0.0.1", "::1"),
) -> TlsFiles:
    """Create (if needed) a local CA and a server cert for the given names under ``data_dir/tls``.

    An existing CA is reused; the server cert is re-issued only when missing, expiring
    within 30 days, not signed by the CA, or not covering every requested name.
    """
    tls_dir = data_dir / "tls"
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = ca_path(data_dir), tls_dir / "ca-key.pem"
    cert_path, key_path = tls_dir / "server.pem", tls_dir / "server-key.pem"
    dns, ips = _split_names(hostnames, addresses)

    try:
        ca = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = _load_ec_key(ca_key_path)
        if ca.public_key() != ca_key.public_key() or ca.not_valid_after_utc <= _now():
            raise ValueError("local CA unusable")
    except (OSError, ValueError):
        ca, ca_key = _create_ca(ca_cert_path, ca_key_path)

    if not _server_cert_ok(cert_path, key_path, ca, dns, ips):
        _issue_server(cert_path, key_path, ca, ca_key, dns, ips)
    return TlsFiles(cert=cert_path, key=key_path, ca=ca_cert_path)


def user_tls(cert: Path, key: Path) -> TlsFiles:
    """Validate a user-supplied PEM certificate and private key; raise ValueError if unusable."""
    for label, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise ValueError(f"TLS {label} file not found: {path}")
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError as exc:
        raise ValueError(f"cannot read TLS certificate {cert}: {exc}") from exc
    try:
        private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot read TLS key {key} (must be unencrypted PEM): {exc}") from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private_key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ValueError(f"TLS key {key} does not match certificate {cert}")
    return TlsFiles(cert=cert, key=key, ca=None)


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """Server-side SSL context (TLS >= 1.2) loaded with ``files``' cert chain."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile=files.cert, keyfile=files.key)
    return ctx
