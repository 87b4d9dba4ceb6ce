"""The lab registry's CA, server certificate and credentials, checked the way their users
check them: Python's `ssl` (OpenSSL) verifies the certificate for real, bcrypt checks the
htpasswd entry, and when the `docker-registry` binary is on the machine, Distribution itself
serves with them."""

from __future__ import annotations

import base64
import datetime
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, Tuple

import bcrypt
import pytest
import requests
import yaml
from cryptography import x509

from mlfleet.controller.lab.registry_tls import (
    CA_CERT,
    CA_DAYS,
    CA_KEY,
    RegistryTlsError,
    docker_config,
    ensure_ca,
    ensure_server_cert,
    htpasswd_line,
    make_ca,
    make_server_cert,
    new_password,
    registry_config,
    write_private,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    make_ca(tmp_path / "ca", "mlfleet lab test CA")
    return tmp_path / "ca"


# ---------------------------------------------------------------------------------------
# TLS, verified by OpenSSL through Python's ssl module


def _serve_tls_once(cert: Path, key: Path) -> Tuple[int, threading.Thread]:
    """A TLS server on 127.0.0.1 that accepts one connection and answers b"ok"."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(cert), str(key))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with listener:
            listener.settimeout(10)
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client refused the certificate: that is its answer

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def _client_reads(ca: Path, port: int) -> bytes:
    """Connect trusting only `ca`, checking the host name (here an IP) the way Go does."""
    ctx = ssl.create_default_context(cafile=str(ca))
    # Python 3.13's default, and the stricter reading of the certificate profile.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    # Two statements: the second raises when the handshake fails, and the first still closes.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # noqa: SIM117
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.recv(2)


def test_the_ca_verifies_a_server_certificate_made_for_that_ip(tmp_path: Path, ca_dir: Path):
    cert, key = make_server_cert(tmp_path / "server", ca_dir, "127.0.0.1")
    port, thread = _serve_tls_once(cert, key)
    assert _client_reads(ca_dir / CA_CERT, port) == b"ok"
    thread.join(10)


def test_a_certificate_for_another_ip_fails_verification(tmp_path: Path, ca_dir: Path):
    cert, key = make_server_cert(tmp_path / "server", ca_dir, "10.77.0.1")
    port, thread = _serve_tls_once(cert, key)
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        _client_reads(ca_dir / CA_CERT, port)
    thread.join(10)


def test_a_certificate_from_another_ca_fails_verification(tmp_path: Path, ca_dir: Path):
    other = tmp_path / "other-ca"
    make_ca(other, "someone else")
    cert, key = make_server_cert(tmp_path / "server", other, "127.0.0.1")
    port, thread = _serve_tls_once(cert, key)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _client_reads(ca_dir / CA_CERT, port)
    thread.join(10)


def test_certificates_say_what_they_are_for(tmp_path: Path, ca_dir: Path):
    ca = _cert(ca_dir / CA_CERT)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > datetime.timedelta(days=9 * 365)

    cert_path, _ = make_server_cert(tmp_path / "server", ca_dir, "10.77.0.1")
    server = _cert(cert_path)
    assert server.issuer == ca.subject
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.77.0.1"]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert datetime.timedelta(days=360) < lifetime < datetime.timedelta(days=370)


def test_private_keys_are_0600(tmp_path: Path, ca_dir: Path):
    _, key = make_server_cert(tmp_path / "server", ca_dir, "10.77.0.1")
    assert _mode(ca_dir / CA_KEY) == 0o600
    assert _mode(key) == 0o600
    assert _mode(ca_dir / CA_CERT) == 0o644


def test_a_server_certificate_needs_an_ip_address(tmp_path: Path, ca_dir: Path):
    with pytest.raises(RegistryTlsError, match=r"needs an IP address, not 'registry\.lab'"):
        make_server_cert(tmp_path / "server", ca_dir, "registry.lab")


# ---------------------------------------------------------------------------------------
# ensure_*: reuse what is still good, make again what is not


def test_ensure_ca_keeps_a_good_ca_and_replaces_one_about_to_expire(tmp_path: Path):
    ca = ensure_ca(tmp_path, "lab")
    first = ca.read_bytes()
    assert ensure_ca(tmp_path, "lab").read_bytes() == first
    renewed = ensure_ca(tmp_path, "lab", renew_before=datetime.timedelta(days=CA_DAYS + 1))
    assert renewed.read_bytes() != first


def test_ensure_ca_replaces_a_ca_whose_key_is_gone_or_foreign(tmp_path: Path):
    first = ensure_ca(tmp_path / "a", "lab").read_bytes()
    (tmp_path / "a" / CA_KEY).unlink()
    assert ensure_ca(tmp_path / "a", "lab").read_bytes() != first

    ensure_ca(tmp_path / "b", "other")
    shutil.copy(tmp_path / "b" / CA_KEY, tmp_path / "a" / CA_KEY)
    second = (tmp_path / "a" / CA_CERT).read_bytes()
    assert ensure_ca(tmp_path / "a", "lab").read_bytes() != second


def test_ensure_server_cert_reuses_only_a_cert_for_that_ip_from_that_ca(
    tmp_path: Path, ca_dir: Path
):
    server = tmp_path / "server"
    cert, _ = ensure_server_cert(server, ca_dir, "10.77.0.1")
    first = cert.read_bytes()
    assert ensure_server_cert(server, ca_dir, "10.77.0.1")[0].read_bytes() == first

    moved = ensure_server_cert(server, ca_dir, "10.78.0.1")[0].read_bytes()
    assert moved != first
    assert "10.78.0.1" in str(_cert(cert).extensions)

    make_ca(ca_dir, "a new lab CA")  # engines now trust only the new one
    assert ensure_server_cert(server, ca_dir, "10.78.0.1")[0].read_bytes() != moved
    _cert(cert).verify_directly_issued_by(_cert(ca_dir / CA_CERT))


def test_ensure_server_cert_replaces_a_cert_that_does_not_match_its_key(
    tmp_path: Path, ca_dir: Path
):
    server = tmp_path / "server"
    cert, key = ensure_server_cert(server, ca_dir, "10.77.0.1")
    first = cert.read_bytes()
    make_server_cert(tmp_path / "elsewhere", ca_dir, "10.77.0.1")
    shutil.copy(tmp_path / "elsewhere" / "server.key", key)
    assert ensure_server_cert(server, ca_dir, "10.77.0.1")[0].read_bytes() != first


# ---------------------------------------------------------------------------------------
# Credentials and files


def test_htpasswd_line_is_a_bcrypt_entry_for_that_password():
    password = new_password()
    line = htpasswd_line("fleet", password)
    user, hashed = line.split(":", 1)
    assert user == "fleet" and hashed.startswith("$2") and "\n" not in line
    assert bcrypt.checkpw(password.encode(), hashed.encode())
    assert not bcrypt.checkpw(b"not the password", hashed.encode())


@pytest.mark.parametrize("user", ["", "a:b", "two\nlines"])
def test_htpasswd_line_refuses_user_names_the_file_cannot_hold(user: str):
    with pytest.raises(RegistryTlsError, match="cannot go into an htpasswd file"):
        htpasswd_line(user, "secret")


@pytest.mark.parametrize("password", ["", "x" * 73])
def test_htpasswd_line_refuses_passwords_bcrypt_cannot_take(password: str):
    with pytest.raises(RegistryTlsError, match="1 to 72 bytes") as caught:
        htpasswd_line("fleet", password)
    assert "x" * 73 not in str(caught.value)  # never the secret itself


def test_new_passwords_are_long_random_and_url_safe():
    passwords = {new_password() for _ in range(20)}
    assert len(passwords) == 20
    for password in passwords:
        assert len(password) >= 32
        assert set(password) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def test_docker_config_decodes_back_to_the_credentials():
    config = docker_config("10.77.0.1:5000", "fleet", "pa:ss")
    assert list(config) == ["auths"] and list(config["auths"]) == ["10.77.0.1:5000"]
    auth = config["auths"]["10.77.0.1:5000"]["auth"]
    assert base64.b64decode(auth).decode() == "fleet:pa:ss"


def test_write_private_makes_a_0600_file_atomically(tmp_path: Path):
    target = tmp_path / "config.json"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, "new")
    assert target.read_text() == "new"
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary left


def test_write_private_leaves_nothing_behind_when_it_fails(tmp_path: Path):
    with pytest.raises(UnicodeEncodeError):
        write_private(tmp_path / "secret", "\udcff")
    assert list(tmp_path.iterdir()) == []


def test_registry_config_has_tls_and_htpasswd_when_given(tmp_path: Path):
    text = registry_config(
        "10.77.0.1:5000",
        tmp_path / "data",
        (tmp_path / "server.crt", tmp_path / "server.key"),
        tmp_path / "htpasswd",
        realm="lab-registry",
    )
    config = yaml.safe_load(text)
    assert config["version"] == "0.1"
    assert config["log"]["level"] == "info"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")
    assert config["storage"]["delete"]["enabled"] is True
    assert config["http"] == {
        "addr": "10.77.0.1:5000",
        "tls": {
            "certificate": str(tmp_path / "server.crt"),
            "key": str(tmp_path / "server.key"),
        },
    }
    assert config["auth"] == {
        "htpasswd": {"realm": "lab-registry", "path": str(tmp_path / "htpasswd")}
    }


def test_registry_config_without_tls_or_auth_is_a_plain_open_registry(tmp_path: Path):
    config = yaml.safe_load(registry_config("127.0.0.1:5000", tmp_path, None, None))
    assert config["http"] == {"addr": "127.0.0.1:5000"}
    assert "auth" not in config


# ---------------------------------------------------------------------------------------
# Distribution itself, when it is installed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def running_registry(tmp_path: Path) -> Iterator[Tuple[str, Path, str, str]]:
    """Distribution on 127.0.0.1 with TLS and htpasswd from this module: yields its base URL,
    the CA to trust, a user and its password."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("the docker-registry binary (Distribution) is not installed")
    ca = make_ca(tmp_path / "ca", "mlfleet lab test CA")
    tls = make_server_cert(tmp_path / "tls", tmp_path / "ca", "127.0.0.1")
    password = new_password()
    htpasswd = tmp_path / "htpasswd"
    write_private(htpasswd, htpasswd_line("fleet", password) + "\n")
    addr = f"127.0.0.1:{_free_port()}"
    config = tmp_path / "config.yml"
    config.write_text(registry_config(addr, tmp_path / "data", tls, htpasswd))
    log = tmp_path / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_port(addr, proc, log)
        yield f"https://{addr}", ca, "fleet", password
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_port(addr: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    host, port = addr.rsplit(":", 1)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"docker-registry exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"docker-registry did not listen on {addr} within 15 s:\n{log.read_text()}")


def test_distribution_serves_tls_and_requires_the_credentials(
    running_registry: Tuple[str, Path, str, str],
):
    url, ca, user, password = running_registry
    anonymous = requests.get(f"{url}/v2/", verify=str(ca), timeout=10)
    assert anonymous.status_code == 401
    assert 'realm="mlfleet-lab"' in anonymous.headers["WWW-Authenticate"]

    wrong = requests.get(f"{url}/v2/", verify=str(ca), auth=(user, "wrong"), timeout=10)
    assert wrong.status_code == 401

    ok = requests.get(f"{url}/v2/", verify=str(ca), auth=(user, password), timeout=10)
    assert ok.status_code == 200

    # Plain HTTP on the TLS port: Go answers 400, as a real registry does.
    plain = requests.get(url.replace("https://", "http://") + "/v2/", timeout=10)
    assert plain.status_code == 400
