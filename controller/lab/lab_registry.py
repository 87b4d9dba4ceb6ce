"""The lab's registry, like a real private one: TLS with the lab's own CA and credentials
required (Distribution's htpasswd), or, for a test that needs one, open (plain HTTP).

What a secure lab leaves for the controller side is what a real site has: a Docker client
config (`config.json`, as `docker login` writes it) and the CA's certificate. The hosts'
engines trust the CA the way real engines do, through `/etc/docker/certs.d/HOST:PORT/ca.crt`
(a path every engine on this machine reads); the lab removes it when it goes down.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

from mlfleet.agent.credential import RegistryCredential
from mlfleet.controller.credentials import Credentials
from mlfleet.controller.errors import LabError
from mlfleet.controller.lab import registry_tls
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.lab.processes import start_daemon
from mlfleet.controller.registry import CERTS_D, Registry

REGISTRY_PORT = 5000
USER = "mlfleet"


def docker_config_dir(layout: LabLayout) -> Path:
    """$DOCKER_CONFIG for the lab's controller side (its `config.json` holds the login)."""
    return layout.base / "docker-config"


def certs_d(address: str) -> Path:
    return Path(CERTS_D) / address


def start(layout: LabLayout, address: str, secure: bool) -> Dict[str, Any]:
    """Start the registry on `address` (the bridge's); returns its part of the lab state:
    `address`, `pid`, `https`, `ca` and `docker_config` (None for an open registry)."""
    where = f"{address}:{REGISTRY_PORT}"
    directory = layout.registry_dir
    tls = htpasswd = ca = config = None
    if secure:
        ca_dir = directory / "ca"
        ca_dir.mkdir(parents=True, exist_ok=True)
        registry_tls.ensure_ca(ca_dir, f"mlfleet lab {layout.name} CA")
        (directory / "tls").mkdir(parents=True, exist_ok=True)
        tls = registry_tls.ensure_server_cert(directory / "tls", ca_dir, address)
        ca = ca_dir / registry_tls.CA_CERT
        password = registry_tls.new_password()
        htpasswd = directory / "htpasswd"
        htpasswd.with_name("htpasswd.valid").unlink(missing_ok=True)  # a revoked login's
        registry_tls.write_private(htpasswd, registry_tls.htpasswd_line(USER, password) + "\n")
        config_dir = docker_config_dir(layout)
        config_dir.mkdir(parents=True, exist_ok=True)
        config = config_dir / "config.json"
        login = registry_tls.docker_config(where, USER, password)
        registry_tls.write_private(config, json.dumps(login, indent=2) + "\n")
        trust = certs_d(where)
        trust.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ca, trust / "ca.crt")
    yml = directory / "config.yml"
    yml.write_text(
        registry_tls.registry_config(where, directory / "data", tls, htpasswd, log_level="warn")
    )
    pid = start_daemon(["docker-registry", "serve", str(yml)], directory / "registry.log")
    return {
        "address": where,
        "pid": pid,
        "https": secure,
        "ca": str(ca) if ca else None,
        "docker_config": str(config) if config else None,
    }


def revoke_login(layout: LabLayout, revoked: bool) -> None:
    """Revoke the lab's login at the registry (its htpasswd then holds another password;
    the controller's config.json keeps the old one), or restore it: what a token revoked
    or expired at a real registry looks like to everyone holding it. The registry reads the
    file again when it changes, so this takes effect at its next request."""
    htpasswd = layout.registry_dir / "htpasswd"
    kept = htpasswd.with_name("htpasswd.valid")
    if not htpasswd.exists():
        raise LabError(f"lab {layout.name!r} has an open registry: there is no login to revoke")
    if revoked:
        if not kept.exists():
            os.replace(htpasswd, kept)
        line = registry_tls.htpasswd_line(USER, registry_tls.new_password())
        registry_tls.write_private(htpasswd, line + "\n")
    elif kept.exists():
        os.replace(kept, htpasswd)


def remove_trust(registry: Dict[str, Any]) -> None:
    """Take the CA the lab placed for the engines away again (`lab down`)."""
    if registry.get("ca") and registry.get("address"):
        shutil.rmtree(certs_d(registry["address"]), ignore_errors=True)


def credential(registry: Dict[str, Any]) -> Optional[RegistryCredential]:
    """The lab's login, read from its Docker config as the controller reads any."""
    config = registry.get("docker_config")
    if not config:
        return None
    return Credentials().for_registry(registry["address"], config)


def client(registry: Dict[str, Any], timeout: float = 30.0) -> Registry:
    """A registry client for the lab's registry (`lab status --json`'s `registry`), with
    its CA and login: for the lab's own pushes, and for tests."""
    return Registry(
        registry["address"],
        https=bool(registry.get("https")),
        timeout=timeout,
        ca_file=registry.get("ca"),
        credential=credential(registry),
    )
