"""The server SSLContext and the ``--https`` development certificate, in a temporary cache dir.
Handshakes run over memory BIOs: real TLS, no sockets."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devserve.config import Config, load_config
from devserve.errors import ConfigError
from devserve.net import tls


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
              hostname: str = "localhost") -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Complete a TLS handshake between two SSLObjects by shuttling bytes by hand."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server, client
    raise AssertionError("handshake did not finish")


def client_context(cafile: Path, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.set_alpn_protocols(alpn)
    return ctx


def test_dev_certificate_is_created_with_the_right_properties(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    dev = tls.ensure_dev_certificate(cache)
    assert dev.created
    assert dev.cert_path == cache / tls.CERT_NAME and dev.key_path == cache / tls.KEY_NAME
    assert stat.S_IMODE(dev.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(dev.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=364) < lifetime < dt.timedelta(days=366)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave nothing behind


def test_dev_certificate_is_reused_without_rewriting(tmp_path: Path) -> None:
    first = tls.ensure_dev_certificate(tmp_path)
    mtimes = (first.cert_path.stat().st_mtime_ns, first.key_path.stat().st_mtime_ns)
    second = tls.ensure_dev_certificate(tmp_path)
    assert not second.created
    assert second.fingerprint == first.fingerprint
    assert (second.cert_path.stat().st_mtime_ns, second.key_path.stat().st_mtime_ns) == mtimes


def test_dev_certificate_is_renewed_a_week_before_it_expires(tmp_path: Path) -> None:
    first = tls.ensure_dev_certificate(tmp_path)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=360)
    renewed = tls.ensure_dev_certificate(tmp_path, now=later)
    assert renewed.created and renewed.fingerprint != first.fingerprint
    assert renewed.not_after > first.not_after


@pytest.mark.parametrize("damage", ["garbage-cert", "missing-key", "other-key"])
def test_broken_dev_certificate_is_regenerated(tmp_path: Path, damage: str) -> None:
    first = tls.ensure_dev_certificate(tmp_path)
    if damage == "garbage-cert":
        first.cert_path.write_bytes(b"not a certificate")
    elif damage == "missing-key":
        first.key_path.unlink()
    else:
        other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        first.key_path.write_bytes(other)
    again = tls.ensure_dev_certificate(tmp_path)
    assert again.created and again.fingerprint != first.fingerprint
    assert stat.S_IMODE(again.key_path.stat().st_mode) == 0o600


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(tls.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tls.cache_dir() == tmp_path / "home" / ".cache" / "devserve"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tls.cache_dir() == tmp_path / "xdg" / "devserve"
    monkeypatch.setenv(tls.CACHE_ENV, str(tmp_path / "override"))
    assert tls.cache_dir() == tmp_path / "override"


def test_https_context_negotiates_h2_with_the_dev_certificate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(tls.CACHE_ENV, str(tmp_path))
    with caplog.at_level("INFO", logger="devserve.error"):
        context = tls.create_ssl_context(Config(app="m:a", https=True))
    assert context is not None
    assert "update-ca-certificates" in caplog.text and str(tmp_path) in caplog.text
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    cert = tmp_path / tls.CERT_NAME
    for hostname in ("localhost", "127.0.0.1"):
        server, client = handshake(context, client_context(cert, ["h2", "http/1.1"]), hostname)
        assert server.selected_alpn_protocol() == "h2" == client.selected_alpn_protocol()
    _, client = handshake(context, client_context(cert, ["http/1.1"]))
    assert client.selected_alpn_protocol() == "http/1.1"


def test_no_http2_offers_only_http11(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(tls.CACHE_ENV, str(tmp_path))
    context = tls.create_ssl_context(Config(app="m:a", https=True, http2=False))
    assert context is not None
    _, client = handshake(context, client_context(tmp_path / tls.CERT_NAME, ["h2", "http/1.1"]))
    assert client.selected_alpn_protocol() == "http/1.1"


def test_tls12_with_http2_picks_an_aead_cipher(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    """uvicorn's default "TLSv1" cipher string has only CBC suites, which HTTP/2 forbids."""
    monkeypatch.setenv(tls.CACHE_ENV, str(tmp_path))
    context = tls.create_ssl_context(Config(app="m:a", https=True))
    assert context is not None
    client_ctx = client_context(tmp_path / tls.CERT_NAME, ["h2"])
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    _, client = handshake(context, client_ctx)
    name, version, _ = client.cipher()  # type: ignore[misc]
    assert version == "TLSv1.2" and ("GCM" in name or "CHACHA20" in name)


def test_explicit_files_password_and_client_certificates(tmp_path: Path) -> None:
    dev = tls.ensure_dev_certificate(tmp_path)
    key = serialization.load_pem_private_key(dev.key_path.read_bytes(), password=None)
    encrypted = tmp_path / "enc-key.pem"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret")))
    base = {"app": "m:a", "ssl_certfile": str(dev.cert_path), "ssl_keyfile": str(encrypted)}
    context = tls.create_ssl_context(Config(**base, ssl_keyfile_password="s3cret",  # type: ignore[arg-type]
                                            ssl_cert_reqs=2, ssl_ca_certs=str(dev.cert_path)))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="could not load the certificate"):
        tls.create_ssl_context(Config(**base, ssl_keyfile_password="wrong"))  # type: ignore[arg-type]


def test_bad_cipher_string_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv(tls.CACHE_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match="--ssl-ciphers"):
        tls.create_ssl_context(Config(app="m:a", https=True, ssl_ciphers="NO-SUCH-CIPHER"))


def test_plain_http_has_no_context() -> None:
    assert tls.create_ssl_context(Config(app="m:a")) is None


@pytest.mark.parametrize(("overrides", "message"), [
    ({"ssl_cert_reqs": "3"}, "must be 0 (none), 1 (optional) or 2 (required)"),
    ({"ssl_keyfile_password": "x"}, "requires --ssl-keyfile"),
    ({"ssl_ca_certs": "missing.pem"}, "file not found"),
    ({"h2_max_concurrent_streams": "0"}, "at least 1"),
    ({"h2_max_header_list_size": "10"}, "at least 1024"),
])
def test_tls_and_h2_options_are_validated(tmp_path: Path, overrides: dict[str, str],
                                          message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"app": "m:a", **overrides}, environ={}, cwd=tmp_path)
    assert message in str(info.value)


def test_tls_and_h2_options_load(tmp_path: Path) -> None:
    config = load_config({"app": "m:a", "https": "true", "http2": "false",
                          "ssl_cert_reqs": "1", "h2_max_concurrent_streams": "250"},
                         environ={"DEVSERVE_SSL_CIPHERS": "ECDHE+AESGCM"}, cwd=tmp_path)
    assert config.https and not config.http2 and config.ssl_cert_reqs == 1
    assert config.h2_max_concurrent_streams == 250 and config.ssl_ciphers == "ECDHE+AESGCM"
