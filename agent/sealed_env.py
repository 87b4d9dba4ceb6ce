"""Inline `container.env` values at rest: the agent's record keeps a keyed hash of each
(HMAC-SHA256 with a random key of this host), never the value.

The values are often secrets filled from inventory variables. A hash is enough for what the
record is read for: telling whether a deployment asks for what already serves ("unchanged")
and recognising the values in a container the engine still holds, which is where recreating
a release takes them from (`recover_env`). The key lives beside the record, `env.key`,
0600, made on first use; without it a copied state.db tells nothing (a value cannot be
guessed offline, however short).

Python 3.8 compatible and stdlib only: part of the agent."""

from __future__ import annotations

import copy
import errno
import hashlib
import hmac
import os
import stat
from typing import Any, Dict, Mapping, Optional, Sequence

KEY_FILE = "env.key"
KEY_BYTES = 32
PREFIX = "hmac-sha256:"


class SealKeyError(Exception):
    """The agent's key for sealing env values cannot be read or made: the message names
    the file and what to do."""


def seal(key: bytes, name: str, value: str) -> str:
    """The keyed hash recorded for `name=value` (pure). The name is hashed with the value,
    so one secret under two names does not show as equal."""
    message = name.encode("utf-8", "surrogatepass") + b"\0" + value.encode("utf-8", "surrogatepass")
    return PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()


def matches(key: bytes, name: str, value: str, sealed: str) -> bool:
    """Whether `value` is the one sealed for `name` (pure, constant time)."""
    return hmac.compare_digest(seal(key, name, value), sealed)


def inline_env(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """The inline env of a desired state (as a dict): `container.env` (pure)."""
    container = spec.get("container")
    env = container.get("env") if isinstance(container, dict) else None
    return env if isinstance(env, dict) else {}


def seal_spec(spec: Mapping[str, Any], key: bytes) -> Dict[str, Any]:
    """A desired state (as a dict) with its inline env values replaced by their hashes
    (pure; the rest unchanged, the argument untouched)."""
    sealed = copy.deepcopy(dict(spec))
    env = inline_env(sealed)
    if env:
        sealed["container"]["env"] = {
            name: seal(key, str(name), str(value)) for name, value in env.items()
        }
    return sealed


def recover_env(key: bytes, sealed: Mapping[str, str], engine_env: Sequence[str],
                from_file: Mapping[str, str]) -> Optional[Dict[str, str]]:  # fmt: skip
    """The inline env values of a release, read back from a container's `Config.Env`
    (`NAME=value` items, as the engine keeps them) when every one of them matches its
    recorded hash; None when one is missing or different (pure). A name the env file sets
    needs no value: the file's wins in the container anyway (container_config)."""
    held: Dict[str, str] = {}
    for item in engine_env:
        name, sep, value = item.partition("=")
        if sep:
            held[name] = value
    env: Dict[str, str] = {}
    for name, recorded in sealed.items():
        if name in from_file:
            env[name] = from_file[name]
            continue
        found = held.get(name)
        if found is None or not matches(key, name, found, recorded):
            return None
        env[name] = found
    return env


def load_key(agent_dir: str) -> bytes:
    """This host's key (`env.key` in the agent's directory), made on first use: 32 random
    bytes in a 0600 file, put in place whole (two agents starting at once agree on one)."""
    path = os.path.join(agent_dir, KEY_FILE)
    key = _read_key(path)
    if key is not None:
        return key
    os.makedirs(agent_dir, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, os.urandom(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails when another agent made one first: theirs is used
        except FileExistsError:
            pass
    except OSError as exc:
        raise SealKeyError(
            f"{path}: cannot make the agent's key for env values: {exc.strerror}; the agent's"
            " directory must be writable by the agent's user"
        ) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    key = _read_key(path)
    if key is None:
        raise SealKeyError(f"{path}: the agent's key for env values vanished as it was made")
    return key


def _read_key(path: str) -> Optional[bytes]:
    """The key in `path`, None when there is none yet; SealKeyError when the file is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise SealKeyError(
            f"{path}: cannot read the agent's key for env values: {exc.strerror}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != KEY_BYTES:
            raise SealKeyError(
                f"{path}: not the agent's key for env values (a file of {KEY_BYTES} bytes);"
                " move it away and the agent makes a new one (releases recorded before then"
                " cannot be recreated without a deployment)"
            )
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
        return os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
