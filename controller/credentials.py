"""Where the controller finds registry credentials: as the docker CLI does.

The docker SDK's auth module reads the Docker client config (`$DOCKER_CONFIG/config.json`,
else `~/.docker/config.json`; `auths`, `credHelpers`, `credsStore` with the
`docker-credential-*` helpers), so a `docker login` on the controller is all an operator
does. A host or group may name its own config file (`mlfleet_registry_auth_file`).

What is found becomes a `RegistryCredential` (agent/credential.py), whose repr hides the
secret; it is handed to a host only on its SSH session's stdin.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

import docker.auth
import docker.errors

from mlfleet.agent.credential import CredentialError, RegistryCredential
from mlfleet.controller.errors import ConfigError

# The SDK logs usernames at debug level; keep its records out of any log mlfleet keeps.
logging.getLogger("docker").setLevel(logging.WARNING)


def _value(entry: Dict[str, str], key: str) -> str:
    """The SDK answers `username` from `auths` and `Username` from a credential store."""
    return entry.get(key) or entry.get(key.capitalize()) or entry.get(key.title()) or ""


class Credentials:
    """The credentials of one or more Docker client configs, each read once (helpers may
    be slow, or ask a desktop keyring), for the length of one command."""

    def __init__(self) -> None:
        self._configs: Dict[Optional[str], docker.auth.AuthConfig] = {}
        self._found: Dict[Tuple[Optional[str], str], Optional[RegistryCredential]] = {}

    def for_registry(
        self, registry: str, config_file: Optional[str] = None
    ) -> Optional[RegistryCredential]:
        """The credential for `registry` (`host:port`), from `config_file` (a host's
        `mlfleet_registry_auth_file`) or the controller's own Docker config; None when there
        is none (the registry may be open)."""
        key = (config_file, registry)
        if key not in self._found:
            self._found[key] = self._resolve(registry, config_file)
        return self._found[key]

    def _config(self, config_file: Optional[str]) -> docker.auth.AuthConfig:
        if config_file not in self._configs:
            if config_file is not None and not os.path.isfile(config_file):
                raise ConfigError(
                    f"registry credentials file {config_file} does not exist",
                    hint="set mlfleet_registry_auth_file to a Docker config.json "
                    "(docker --config DIR login REGISTRY writes one)",
                )
            try:
                self._configs[config_file] = docker.auth.load_config(config_path=config_file)
            except docker.errors.DockerException as exc:
                raise ConfigError(f"Docker config {config_file or '~/.docker'}: {exc}") from None
        return self._configs[config_file]

    def _resolve(self, registry: str, config_file: Optional[str]) -> Optional[RegistryCredential]:
        config = self._config(config_file)
        where = config_file or "the Docker config (~/.docker/config.json or $DOCKER_CONFIG)"
        try:
            entry = config.resolve_authconfig(registry)
        except docker.errors.DockerException as exc:
            helper = config.get_credential_store(registry)
            raise ConfigError(
                f"registry {registry}: the credential helper docker-credential-{helper} failed"
                f" ({type(exc).__name__})",
                hint=f"run `docker-credential-{helper} list` to check it, or log in again",
            ) from None
        if not entry:
            return None
        try:
            return RegistryCredential(
                serveraddress=registry,
                username=_value(entry, "username"),
                password=_value(entry, "password"),
                identitytoken=entry.get("IdentityToken") or entry.get("identitytoken") or "",
            )
        except CredentialError:
            raise ConfigError(
                f"registry {registry}: the entry in {where} has no password or token",
                hint=f"log in again: docker login {registry}",
            ) from None
