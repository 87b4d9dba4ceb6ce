"""The credential an operator placed on this host for a registry, for the pulls the agent
makes with no controller around (self-healing re-pulls), standard library only, Python 3.8:

- the agent's opt-in store (`registry-credentials.json` in the agent's directory, 0600), which
  apply fills only when the operator asks for it (mlfleet_store_pull_credentials);
- else the host's Docker client config (`docker login`), found the way the docker CLI finds
  it (cli/config: credHelpers, credsStore, auths), credential helpers included.

Talking to the registry with the credential found is registry_auth's job. No message, repr
or log line here contains a password or token.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import stat
import subprocess
from typing import Any, Dict, Mapping, Optional, Tuple

from mlfleet.agent.credential import CredentialError, RegistryCredential
from mlfleet.agent.registry_auth import IDENTITY_TOKEN_USER

STORE_NAME = "registry-credentials.json"
STORE_SCHEMA = 1
HELPER_TIMEOUT = 10.0

_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HUB_HELPER_ADDRESS = "https://index.docker.io/v1/"  # how `docker login` names Docker Hub
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def registry_hostname(address: str) -> str:
    """How the docker CLI compares registry names (ConvertToHostname): the scheme and any
    path dropped (`https://h:5000/v1/` -> `h:5000`); Docker Hub's names are one."""
    host = address.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in _HUB_NAMES else host


def host_credential(
    registry: str,
    agent_dir: str,
    environ: Mapping[str, str] = os.environ,
    home: Optional[str] = None,
) -> Optional[RegistryCredential]:
    """The credential an operator placed on this host for `registry` (`10.77.0.1:5000`),
    for pulls with no controller around: the agent's opt-in store first, then the host's
    Docker client config. None when there is none; CredentialError, naming the file, when
    one of them is malformed."""
    stored = _read_store(store_path(agent_dir)).get(registry_hostname(registry))
    if stored is not None:
        return stored
    return docker_config_credential(registry, environ, home)


# The opt-in store: what `docker login` would leave, but only for the agent, and only when
# the operator asks for it.


def store_path(agent_dir: str) -> str:
    return os.path.join(agent_dir, STORE_NAME)


def store_credential(agent_dir: str, credential: RegistryCredential) -> None:
    """Keep `credential` in the agent's store (mode 0600, replaced atomically), beside the
    other registries' credentials. A store open to others is rewritten 0600: that is the
    fix, and only reading it for a pull refuses."""
    path = store_path(agent_dir)
    stored = _read_store(path, private=False)
    stored[registry_hostname(credential.serveraddress)] = credential
    _write_store(path, stored)


def forget_credential(agent_dir: str, registry: str) -> bool:
    """Drop `registry`'s credential from the store; whether there was one. The file goes
    when it holds no credential any more."""
    path = store_path(agent_dir)
    stored = _read_store(path, private=False)
    if stored.pop(registry_hostname(registry), None) is None:
        return False
    if stored:
        _write_store(path, stored)
    else:
        os.unlink(path)
    return True


def _read_store(path: str, private: bool = True) -> Dict[str, RegistryCredential]:
    """The store's credentials; with `private`, CredentialError when group or others may
    read or write the file (its secrets may be known, or planted)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
        if private and mode & 0o077:
            raise CredentialError(
                f"{path} holds registry passwords and is open to group or others"
                f" (mode {mode:04o}): run chmod 600 {path}"
            )
        raw = fh.read()
    return parse_store(raw, path)


def parse_store(raw: bytes, path: str) -> Dict[str, RegistryCredential]:
    """The store's credentials by registry (pure; `path` names the file in errors)."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise CredentialError(f"{path} is not JSON: fix or remove it") from None
    if not isinstance(data, dict) or data.get("schema") != STORE_SCHEMA:
        raise CredentialError(f"{path}: expected {{'schema': {STORE_SCHEMA}, 'credentials': ...}}")
    entries = data.get("credentials")
    if not isinstance(entries, dict):
        raise CredentialError(f"{path}: `credentials` must be an object")
    out: Dict[str, RegistryCredential] = {}
    for registry, entry in entries.items():
        try:
            out[registry_hostname(registry)] = RegistryCredential.from_dict(entry)
        except CredentialError as exc:
            raise CredentialError(f"{path}, {registry}: {exc}") from None
    return out


def _write_store(path: str, credentials: Mapping[str, RegistryCredential]) -> None:
    data = {
        "schema": STORE_SCHEMA,
        "credentials": {r: c.to_dict() for r, c in sorted(credentials.items())},
    }
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{STORE_NAME}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):  # left by a crashed writer with our pid
        os.unlink(tmp)
    # Created 0600 from the start: the secret is never in a file others may read.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The host's Docker client config (`docker login`), read as the docker CLI reads it.


def docker_config_path(environ: Mapping[str, str] = os.environ, home: Optional[str] = None) -> str:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (cli/config.Dir)."""
    if environ.get("DOCKER_CONFIG"):
        return os.path.join(environ["DOCKER_CONFIG"], "config.json")
    home = home or environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".docker", "config.json")


def docker_config_credential(
    registry: str, environ: Mapping[str, str] = os.environ, home: Optional[str] = None
) -> Optional[RegistryCredential]:
    """`registry`'s credential from the Docker client config: its credential helper
    (`credHelpers[registry]`, else `credsStore`) when one is set, as the docker CLI does,
    else `auths`. None when there is none."""
    path = docker_config_path(environ, home)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read it ({exc.strerror})") from None
    config = _parse_docker_config(raw, path)
    helper = credential_helper(config, registry, path)
    if helper is not None:
        return helper_credential(helper, registry, environ, path)
    return auths_credential(config, registry, path)


def _parse_docker_config(raw: bytes, path: str) -> Dict[str, Any]:
    try:
        config = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise CredentialError(f"{path} is not JSON: fix it or run docker login again") from None
    if not isinstance(config, dict):
        raise CredentialError(f"{path} must hold a JSON object")
    for key in ("auths", "credHelpers"):
        if not isinstance(config.get(key) or {}, dict):
            raise CredentialError(f"{path}: `{key}` must be an object")
    if not isinstance(config.get("credsStore") or "", str):
        raise CredentialError(f"{path}: `credsStore` must be a string")
    return config


def _entry_for(entries: Mapping[str, Any], registry: str) -> Tuple[str, Any]:
    """The (key, value) for `registry`: the exact key, else one naming the same host
    (`https://h:5000`, `h:5000/v1/`); ("", None) when none does."""
    if registry in entries:
        return registry, entries[registry]
    host = registry_hostname(registry)
    for key, value in entries.items():
        if registry_hostname(key) == host:
            return key, value
    return "", None


def credential_helper(config: Mapping[str, Any], registry: str, path: str) -> Optional[str]:
    """The credential helper's name for `registry` (pure), None when the config sets none."""
    name = _entry_for(config.get("credHelpers") or {}, registry)[1] or config.get("credsStore")
    if not name:
        return None
    if not isinstance(name, str) or not _HELPER_NAME.fullmatch(name):
        raise CredentialError(f"{path}: {name!r} is not a credential helper's name")
    return name


def helper_credential(
    helper: str, registry: str, environ: Mapping[str, str], path: str
) -> Optional[RegistryCredential]:
    """Ask `docker-credential-<helper> get` for `registry` (the credential-helpers
    protocol: the server address on stdin, JSON on stdout). None when it has none."""
    program_name = f"docker-credential-{helper}"
    program = shutil.which(program_name, path=environ.get("PATH", os.defpath))
    if program is None:
        raise CredentialError(
            f"{path} names the credential helper {program_name}; it is not on PATH"
        )
    address = _HUB_HELPER_ADDRESS if registry_hostname(registry) == "docker.io" else registry
    try:
        done = subprocess.run(
            [program, "get"],
            input=address.encode(),
            capture_output=True,
            env=dict(environ),
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CredentialError(
            f"{program_name} get did not answer within {HELPER_TIMEOUT:.0f} s"
        ) from None
    except OSError as exc:
        raise CredentialError(f"{program_name} could not run: {exc.strerror}") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode(errors="replace").strip()
        if "credentials not found" in said.lower():
            return None
        first = said.splitlines()[0][:200] if said else f"exit status {done.returncode}"
        raise CredentialError(f"{program_name} get failed for {registry}: {first}")
    return parse_helper_answer(done.stdout, registry, program_name)


def parse_helper_answer(raw: bytes, registry: str, program: str) -> Optional[RegistryCredential]:
    """A helper's `{"ServerURL", "Username", "Secret"}` as a credential (pure); Username
    `<token>` marks Secret as an identity token."""
    try:
        answer = json.loads(raw)
    except ValueError:
        raise CredentialError(f"{program} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise CredentialError(f"{program} answered something that is not a JSON object")
    username, secret = answer.get("Username") or "", answer.get("Secret") or ""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialError(f"{program}: Username and Secret must be strings")
    if not secret:
        return None
    if username == IDENTITY_TOKEN_USER:
        return RegistryCredential(registry, identitytoken=secret)
    return RegistryCredential(registry, username=username, password=secret)


def auths_credential(
    config: Mapping[str, Any], registry: str, path: str
) -> Optional[RegistryCredential]:
    """`registry`'s entry in `auths` (pure): `auth` (base64 of user:password), or
    `username`/`password`, and an `identitytoken`. None when there is none or it is empty."""
    key, entry = _entry_for(config.get("auths") or {}, registry)
    if entry is None:
        return None
    where = f"{path}: auths[{key!r}]"
    if not isinstance(entry, dict):
        raise CredentialError(f"{where} must be an object")
    username, password = _decode_auth(entry.get("auth") or "", where)
    username = username or _text(entry, "username", where)
    password = password or _text(entry, "password", where)
    token = _text(entry, "identitytoken", where)
    if not (password or token):
        return None
    return RegistryCredential(registry, username=username, password=password, identitytoken=token)


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key) or ""
    if not isinstance(value, str):
        raise CredentialError(f"{where}.{key} must be a string")
    return value


def _decode_auth(auth: Any, where: str) -> Tuple[str, str]:
    if not auth:
        return "", ""
    if not isinstance(auth, str):
        raise CredentialError(f"{where}.auth must be a string")
    try:
        text = base64.b64decode(auth + "=" * (-len(auth) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialError(f"{where}.auth is not base64 of user:password") from None
    username, colon, password = text.partition(":")
    if not colon:
        raise CredentialError(f"{where}.auth is not base64 of user:password")
    return username, password
