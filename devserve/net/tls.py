"""The server's ``SSLContext`` (uvicorn's ``--ssl-*`` flags, TLS 1.2+, ALPN) and the ``--https``
development certificate.

``--https`` without certificate files must work on a fresh machine with no setup, so devserve
makes its own self-signed localhost certificate (EC P-256, SAN localhost/127.0.0.1/::1, one year)
in the user cache directory and reuses it while it is valid: clients that were told to trust it
keep trusting it across restarts. The key is written 0600 and files are replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from devserve.config import Config
from devserve.errors import ConfigError

logger = logging.getLogger("devserve.error")

CACHE_ENV = "DEVSERVE_CACHE_DIR"
CERT_NAME = "localhost-cert.pem"
KEY_NAME = "localhost-key.pem"
VALIDITY = dt.timedelta(days=365)
RENEW_BEFORE = dt.timedelta(days=7)
H2_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def tls_enabled(config: Config) -> bool:
    return config.https or config.ssl_certfile is not None


def alpn_protocols(config: Config) -> list[str]:
    return ["h2", "http/1.1"] if config.http2 else ["http/1.1"]


def create_ssl_context(config: Config, *, announce: bool = True) -> ssl.SSLContext | None:
    """The server context for *config*, or None for plain HTTP. ``announce`` logs where the
    development certificate lives (the Supervisor does; process workers reuse it quietly)."""
    if not tls_enabled(config):
        return None
    certfile, keyfile = config.ssl_certfile, config.ssl_keyfile
    if certfile is None:
        dev = ensure_dev_certificate(cache_dir())
        certfile, keyfile = str(dev.cert_path), str(dev.key_path)
        if announce:
            _announce(dev)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    password = config.ssl_keyfile_password
    try:
        context.load_cert_chain(certfile, keyfile, password=password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("--ssl-certfile", f"could not load the certificate: {exc}",
                          hint="check the key matches and --ssl-keyfile-password") from None
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if config.ssl_ca_certs:
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("--ssl-ca-certs", f"could not load: {exc}") from None
    try:
        context.set_ciphers(config.ssl_ciphers)
    except ssl.SSLError:
        raise ConfigError("--ssl-ciphers", f"no cipher matches {config.ssl_ciphers!r}",
                          hint="use an OpenSSL cipher string, e.g. TLSv1 or ECDHE+AESGCM"
                          ) from None
    if config.http2:
        # "TLSv1" (uvicorn's default) has no AEAD suite, and HTTP/2 over TLS 1.2 forbids the
        # others (RFC 9113 §9.2.2): offer the allowed ones first (the server's order wins).
        context.set_ciphers(f"{H2_TLS12_CIPHERS}:{config.ssl_ciphers}")
    context.set_alpn_protocols(alpn_protocols(config))
    return context


# -- development certificate -------------------------------------------------------------------
@dataclass(frozen=True)
class DevCertificate:
    cert_path: Path
    key_path: Path
    fingerprint: str  # SHA-256 of the DER certificate, hex with colons
    not_after: dt.datetime
    created: bool  # False: an existing valid certificate was reused


def cache_dir() -> Path:
    """``$DEVSERVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/devserve``, else ``~/.cache/devserve``."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "devserve"


def ensure_dev_certificate(directory: Path, *, now: dt.datetime | None = None) -> DevCertificate:
    """Reuse the certificate in *directory* unless it is missing, unreadable, mismatched with
    its key or expiring within a week; then write a fresh one."""
    now = now or dt.datetime.now(dt.UTC)
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    try:
        import cryptography  # noqa: F401  # only --https without certificate files needs it
    except ImportError:
        raise ConfigError("--https", "making a development certificate needs the "
                          "'cryptography' package", hint="pip install cryptography, or pass "
                          "--ssl-certfile and --ssl-keyfile") from None
    existing = _load_valid(cert_path, key_path, now)
    if existing is not None:
        return existing
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_pem, key_pem, not_after, fingerprint = _generate(now)
        _write_atomic(key_path, key_pem, 0o600)
        _write_atomic(cert_path, cert_pem, 0o644)
    except OSError as exc:
        raise ConfigError("--https", f"cannot write the development certificate in {directory}: "
                          f"{exc}", hint=f"set {CACHE_ENV} to a writable directory") from None
    return DevCertificate(cert_path, key_path, fingerprint, not_after, created=True)


def _load_valid(cert_path: Path, key_path: Path, now: dt.datetime) -> DevCertificate | None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    if key.public_key().public_bytes(pem, public) != cert.public_key().public_bytes(pem, public):
        return None
    not_after = cert.not_valid_after_utc
    if not_after - now < RENEW_BEFORE or cert.not_valid_before_utc > now:
        return None
    der = cert.public_bytes(serialization.Encoding.DER)
    return DevCertificate(cert_path, key_path, _fingerprint(der), not_after, created=False)


def _generate(now: dt.datetime) -> tuple[bytes, bytes, dt.datetime, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devserve development certificate"),
    ])
    not_after = (now + VALIDITY).replace(microsecond=0)
    public = key.public_key()
    # A leaf (CA:FALSE): Firefox refuses CA certificates as server certificates, and OpenSSL
    # (curl --cacert, Python's ssl) accepts a self-signed leaf as its own trust anchor.
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert_pem, key_pem, not_after, _fingerprint(der)


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).digest().hex(":").upper()


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file created with *mode* (never world-readable, even briefly),
    then rename over *path*: a concurrent reader sees the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _announce(dev: DevCertificate) -> None:
    action = "Created" if dev.created else "Using"
    logger.info(
        "%s development certificate %s (self-signed for localhost, 127.0.0.1, ::1; SHA-256 %s; "
        "valid until %s). Browsers warn until it is trusted: curl --cacert %s; Python "
        "ssl.create_default_context(cafile=...); system-wide: sudo cp %s /usr/local/share/"
        "ca-certificates/devserve-localhost.crt && sudo update-ca-certificates (browsers: import "
        "it into their certificate store, as mkcert does)",
        action, dev.cert_path, dev.fingerprint[:23] + "...", dev.not_after.date().isoformat(),
        dev.cert_path, dev.cert_path,
    )
