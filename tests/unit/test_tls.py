"""Tests for flashlive.tls: local CA creation, reuse, re-issue and real handshakes."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flashlive import tls
from flashlive.tls import TlsFiles, ca_path, ensure_local_tls, server_ssl_context, user_tls


def _sans(cert_path: Path) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        set(san.get_values_for_type(x509.DNSName)),
        {str(ip) for ip in san.get_values_for_type(x509.IPAddress)},
    )


def test_creates_files_with_private_key_modes(tmp_path: Path) -> None:
    files = ensure_local_tls(tmp_path)
    tls_dir = tmp_path / "tls"
    assert files == TlsFiles(tls_dir / "server.pem", tls_dir / "server-key.pem", ca_path(tmp_path))
    assert ca_path(tmp_path) == tls_dir / "ca.pem"
    for name in ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem"):
        assert (tls_dir / name).is_file()
    for name in ("ca-key.pem", "server-key.pem"):
        assert stat.S_IMODE((tls_dir / name).stat().st_mode) == 0o600
    assert not list(tls_dir.glob("*.tmp"))
    dns, ips = _sans(files.cert)
    assert dns == {"localhost"} and ips == {"127.0.0.1", "::1"}


def test_second_call_changes_nothing(tmp_path: Path) -> None:
    first = ensure_local_tls(tmp_path)
    snapshot = {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()}
    second = ensure_local_tls(tmp_path)
    assert first == second
    assert {p.name: p.read_bytes() for p in (tmp_path / "tls").iterdir()} == snapshot


def test_new_names_reissue_server_cert_only(tmp_path: Path) -> None:
    files = ensure_local_tls(tmp_path)
    assert files.ca is not None
    ca_before, server_before = files.ca.read_bytes(), files.cert.read_bytes()
    files2 = ensure_local_tls(
        tmp_path, hostnames=("localhost", "flash.test"), addresses=("10.1.2.3",)
    )
    assert files2.ca is not None and files2.ca.read_bytes() == ca_before
    assert files2.cert.read_bytes() != server_before
    dns, ips = _sans(files2.cert)
    assert dns == {"localhost", "flash.test"} and ips == {"10.1.2.3"}
    # A subset of the names already covered needs no re-issue.
    subset = files2.cert.read_bytes()
    ensure_local_tls(tmp_path, hostnames=("flash.test",), addresses=())
    assert files2.cert.read_bytes() == subset


def test_missing_or_expiring_server_cert_is_reissued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = ensure_local_tls(tmp_path)
    assert files.ca is not None
    ca_before = files.ca.read_bytes()
    files.cert.unlink()
    ensure_local_tls(tmp_path)
    assert files.cert.is_file() and files.ca.read_bytes() == ca_before

    monkeypatch.setattr(tls, "_SERVER_DAYS", 10)  # inside the 30-day renewal margin
    (tmp_path / "tls" / "server.pem").unlink()
    ensure_local_tls(tmp_path)
    short_lived = files.cert.read_bytes()
    monkeypatch.setattr(tls, "_SERVER_DAYS", 730)
    ensure_local_tls(tmp_path)
    assert files.cert.read_bytes() != short_lived
    assert files.ca.read_bytes() == ca_before


def _handshake(files: TlsFiles, server_hostname: str) -> bytes:
    assert files.ca is not None
    server_ctx = server_ssl_context(files)
    client_ctx = ssl.create_default_context(cafile=str(files.ca))
    errors: list[BaseException] = []

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)
        port = listener.getsockname()[1]

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(5)
                with server_ctx.wrap_socket(conn, server_side=True) as tconn:
                    tconn.sendall(b"hello")
            except BaseException as exc:  # reported to the main thread
                errors.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client_ctx.wrap_socket(raw, server_hostname=server_hostname) as conn,
            ):
                assert conn.version() in ("TLSv1.2", "TLSv1.3")
                data = conn.recv(5)
        finally:
            thread.join(timeout=5)
    assert not thread.is_alive()
    assert not errors, errors
    return data


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_client_trusting_ca_completes_handshake(tmp_path: Path, server_hostname: str) -> None:
    assert _handshake(ensure_local_tls(tmp_path), server_hostname) == b"hello"


def test_client_rejects_name_not_in_certificate(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ensure_local_tls(tmp_path), "example.com")


def test_user_tls(tmp_path: Path) -> None:
    files = ensure_local_tls(tmp_path)
    assert user_tls(files.cert, files.key) == TlsFiles(files.cert, files.key, None)

    other = tmp_path / "other-key.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="does not match"):
        user_tls(files.cert, other)
    with pytest.raises(ValueError, match="not found"):
        user_tls(tmp_path / "nope.pem", files.key)
    with pytest.raises(ValueError, match="cannot read TLS certificate"):
        user_tls(other, files.key)
