"""What makes the lab's registry like a real one: TLS with a lab CA, and credentials.

A real registry answers over HTTPS with a certificate the engines trust and refuses anonymous
pulls. The lab gets the same with a CA of its own (engines trust it through
`/etc/docker/certs.d/HOST:PORT/ca.crt`, so no `--insecure-registry`), a server certificate for
the registry's IP address, and an htpasswd file (Distribution 2.8 takes bcrypt entries only).

Everything is made in-process with `cryptography` and `bcrypt`: no openssl or htpasswd
binaries, no secret on a command line. Private keys and secrets are written 0600 from the
moment the file exists (never chmod'ed afterwards) and replaced atomically, so a crash leaves
either the old file or the new one.

Keys are ECDSA P-256: Go's TLS (Distribution, the Docker engine) and OpenSSL take it, and it
is made in milliseconds where RSA takes a noticeable fraction of a second.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import bcrypt
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"

CA_DAYS = 3650
SERVER_DAYS = 365
# A certificate with less than this left is made again by the ensure_* functions, so a lab
# that is brought up does not stop working in the middle of a run.
RENEW_BEFORE = datetime.timedelta(days=30)
# Certificates start a little in the past: a host whose clock is slightly behind must not
# see them as not yet valid.
_BACKDATE = datetime.timedelta(hours=1)

BCRYPT_COST = 10
# bcrypt ignores what follows the 72nd byte; the bcrypt package refuses it outright.
_BCRYPT_MAX_BYTES = 72


class RegistryTlsError(ValueError):
    """An input the registry's certificates or credential files cannot be made from (an
    address that is not an IP, a user name htpasswd cannot hold). Never contains a secret."""


# ---------------------------------------------------------------------------------------
# Certificates


def make_ca(directory: Path, name: str) -> Path:
    """Make a new lab CA in `directory` (ca.crt, and ca.key 0600) and return ca.crt's path.

    The CA may sign server certificates only (path length 0): it is trusted by every lab
    engine on the machine, so it should be able to do as little as possible."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mlfleet lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        # OpenSSL's strict verification (Python 3.13's default) wants the key identifiers.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    write_private(directory / CA_KEY, _key_pem(key))
    _write_atomic(directory / CA_CERT, _cert_pem(cert), 0o644)
    return directory / CA_CERT


def make_server_cert(directory: Path, ca_dir: Path, ip: str) -> Tuple[Path, Path]:
    """Make a server certificate for the IP address `ip`, signed by the CA in `ca_dir`, in
    `directory` (server.crt, and server.key 0600); return (certificate, key).

    The address goes into subjectAltName: Go's TLS (Distribution, the Docker engine) ignores
    the common name and refuses a certificate without a SAN for the name it dialled."""
    address = _ip(ip)
    ca_key = _load_key(ca_dir / CA_KEY)
    ca_cert = _load_cert(ca_dir / CA_CERT)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(address))]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(address)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / SERVER_KEY, directory / SERVER_CERT
    # The key first: a crash in between leaves a certificate that does not match it, which
    # ensure_server_cert sees and replaces, never a new certificate with an old key.
    write_private(key_path, _key_pem(key))
    _write_atomic(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def ensure_ca(
    directory: Path, name: str, *, renew_before: datetime.timedelta = RENEW_BEFORE
) -> Path:
    """The CA in `directory`, made again only when it is missing, unreadable, does not match
    its key or expires within `renew_before`: engines that already trust it keep doing so
    across `lab up` runs."""
    if _usable_ca(directory, renew_before):
        return directory / CA_CERT
    return make_ca(directory, name)


def ensure_server_cert(
    directory: Path,
    ca_dir: Path,
    ip: str,
    *,
    renew_before: datetime.timedelta = RENEW_BEFORE,
) -> Tuple[Path, Path]:
    """The server certificate in `directory`, made again unless it is for exactly `ip`, was
    signed by the CA now in `ca_dir`, matches its key and is valid for `renew_before` more."""
    address = _ip(ip)
    if _usable_server_cert(directory, ca_dir, address, renew_before):
        return directory / SERVER_CERT, directory / SERVER_KEY
    return make_server_cert(directory, ca_dir, ip)


def _usable_ca(directory: Path, renew_before: datetime.timedelta) -> bool:
    try:
        cert, key = _load_cert(directory / CA_CERT), _load_key(directory / CA_KEY)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    return (
        constraints.ca
        and _same_key(cert, key)
        and _valid_for(cert, renew_before)
        and _self_signed(cert)
    )


def _usable_server_cert(
    directory: Path,
    ca_dir: Path,
    address: Union[ipaddress.IPv4Address, ipaddress.IPv6Address],
    renew_before: datetime.timedelta,
) -> bool:
    try:
        cert, key = _load_cert(directory / SERVER_CERT), _load_key(directory / SERVER_KEY)
        ca_cert = _load_cert(ca_dir / CA_CERT)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert.verify_directly_issued_by(ca_cert)
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return (
        san.get_values_for_type(x509.IPAddress) == [address]
        and not san.get_values_for_type(x509.DNSName)
        and _same_key(cert, key)
        and _valid_for(cert, renew_before)
    )


def _self_signed(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def _valid_for(cert: x509.Certificate, left: datetime.timedelta) -> bool:
    now = _now()
    return cert.not_valid_before_utc <= now and now + left < cert.not_valid_after_utc


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    # ECDSA keys sign (TLS handshakes, certificates); key_encipherment is RSA-only.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _ip(ip: str) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        raise RegistryTlsError(
            f"the registry's certificate needs an IP address, not {ip!r}"
        ) from None


def _load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path} is not an EC private key")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# ---------------------------------------------------------------------------------------
# Credentials


def new_password() -> str:
    """A fresh random password (URL-safe, 32 characters: well inside bcrypt's 72 bytes and
    safe in a URL, a YAML file or a header)."""
    return secrets.token_urlsafe(24)


def htpasswd_line(user: str, password: str) -> str:
    """One htpasswd entry, `user:$2b$10$...` (no newline).

    bcrypt because Distribution 2.8 accepts nothing else; Go's bcrypt reads `$2b$` as well as
    Apache's `$2y$` (it checks only the major version)."""
    if not user or any(c in user for c in ":\r\n"):
        raise RegistryTlsError(
            f"registry user name {user!r} cannot go into an htpasswd file "
            "(it must be non-empty, without ':' or line breaks)"
        )
    secret = password.encode("utf-8")
    if not secret or len(secret) > _BCRYPT_MAX_BYTES:
        raise RegistryTlsError(
            f"the password for registry user {user!r} must be 1 to {_BCRYPT_MAX_BYTES} bytes "
            "(bcrypt's limit)"
        )
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=BCRYPT_COST)).decode("ascii")
    return f"{user}:{hashed}"


def docker_config(registry: str, user: str, password: str) -> Dict[str, Any]:
    """The `config.json` that `docker login REGISTRY` writes: base64 (standard alphabet) of
    `user:password` under `auths`. Write it with `write_private`."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"auths": {registry: {"auth": auth}}}


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` as a file that is 0600 from its creation, atomically.

    A temporary file in the same directory (mkstemp creates it 0600 and exclusively), fsync,
    then rename over `path`: a reader sees the old content or the new, and a secret is never
    readable by others, not even for a moment."""
    _write_atomic(path, text, 0o600)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            if mode != 0o600:
                os.fchmod(out.fileno(), mode)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory is synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# Distribution's configuration


def registry_config(
    addr: str,
    storage: Path,
    tls: Optional[Tuple[Path, Path]],
    htpasswd: Optional[Path],
    realm: str = "mlfleet-lab",
    *,
    log_level: str = "info",
) -> str:
    """Distribution's config.yml: listen on `addr` (`host:port`), store under `storage`;
    serve TLS with `tls` = (certificate, key) when given, and require the credentials in
    the htpasswd file `htpasswd` when given (its `realm` is what the 401 challenge names).

    `storage.delete` is on so the lab can remove what it pushed."""
    config: Dict[str, Any] = {
        "version": "0.1",
        "log": {"level": log_level},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
        },
        "http": {"addr": addr},
    }
    if tls is not None:
        certificate, key = tls
        config["http"]["tls"] = {"certificate": str(certificate), "key": str(key)}
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": realm, "path": str(htpasswd)}}
    return yaml.safe_dump(config, sort_keys=False)
