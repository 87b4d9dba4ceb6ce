"""Ansible Vault values (`key: !vault |` in an inventory or its group_vars/host_vars): kept
encrypted as read, decrypted only with a vault password configured as Ansible users configure
it, and never shown.

The format is Ansible's own (ansible/parsing/vault/__init__.py, ansible-core 2.19): an
envelope header `$ANSIBLE_VAULT;1.1;AES256` (or `1.2;AES256;VAULT_ID`), then lines of hex;
the hex decodes to three lines, salt, HMAC and ciphertext, each hex again. PBKDF2-HMAC-SHA256
(10,000 iterations) of password and salt gives 80 bytes: the AES-256 key, the HMAC-SHA256 key
and the CTR counter block. The HMAC of the ciphertext is checked, in constant time, before
anything is decrypted; the plaintext is PKCS#7-padded UTF-8.

Passwords come from where Ansible reads them, in its order (ansible/cli/__init__.py,
`setup_vault_secrets`): `ANSIBLE_VAULT_IDENTITY_LIST` and `--vault-id ID@FILE`, then
`--vault-password-file FILE` and `ANSIBLE_VAULT_PASSWORD_FILE`. A file holds the password; an
executable file is run and prints it (a `*-client` script is asked `--vault-id ID`). mlfleet
never prompts: `prompt` sources are refused with a line saying so.

Plaintext and passwords appear in no repr, no message and no exception chain (errors are
raised outside the `except` that saw the failure, so no traceback can carry the bytes).

Why written here: on PyPI, `ansible-vault` (4.1) and `ansible-cry` require ansible-core or
ansible, `ansible-vault-tools` runs the `ansible-vault` command, and `ansible-vault-win` (a copy
of Ansible's code on `cryptography`) was last released in 2021. The format is small and fixed;
`cryptography`, already a dependency, does the cryptography.
"""

from __future__ import annotations

import binascii
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from mlfleet.controller.errors import ConfigError

HEADER = "$ANSIBLE_VAULT"
# Ansible's DEFAULT_VAULT_IDENTITY: the label of a password given without one, and the vault
# id a 1.1 envelope (which names none) is taken to have. ANSIBLE_VAULT_IDENTITY renames it.
DEFAULT_VAULT_ID = "default"
CIPHER = "AES256"
KDF_ITERATIONS = 10000
_KEY_BYTES = 32
_COUNTER_BYTES = 16
SCRIPT_TIMEOUT_S = 30
# A `*-client` script exits 2 when it has no secret for the vault id it was asked for.
_CLIENT_UNKNOWN_ID = 2
_PROMPTS = ("prompt", "prompt_ask_vault_pass")
PASSWORD_HINT = "set ANSIBLE_VAULT_PASSWORD_FILE or pass --vault-password-file"


class VaultError(ConfigError):
    """A vault value that cannot be read, or a vault password that cannot be had: bad input,
    like any configuration error (exit 2). The message never holds a password, a key or a
    plaintext."""


@dataclass(frozen=True, repr=False)
class VaultValue:
    """One `!vault` value as read: the envelope exactly as in the file, and where it is
    (`file:line`). Only ciphertext; printed, it says that it is encrypted and where."""

    envelope: str
    where: str

    def __repr__(self) -> str:
        return f"<vault-encrypted value at {self.where}>"

    def __str__(self) -> str:
        return repr(self)

    @property
    def vault_id(self) -> Optional[str]:
        """The vault id a 1.2 envelope names; None for a 1.1 one (or an unreadable header)."""
        first = self.envelope.splitlines()[:1]
        return _header_vault_id(first[0]) if first else None

    def to_json(self) -> Dict[str, str]:
        """As `ansible-inventory --list` prints one, password or not."""
        return {"__ansible_vault": self.envelope}


@dataclass(frozen=True)
class VaultSecret:
    """A vault password and the vault id it is given for; `source` says where it was read
    (a file or a script, for messages). Its repr leaves the password out."""

    vault_id: str
    password: bytes = field(repr=False)
    source: str = ""


# --- decrypting ------------------------------------------------------------------------------


class _Malformed(Exception):
    """Internal: why an envelope cannot be read (text about the format only)."""


class _Sealed(NamedTuple):
    vault_id: Optional[str]
    salt: bytes
    mac: bytes
    ciphertext: bytes


def _shown(text: str, limit: int = 40) -> str:
    """A bit of envelope text for a message, cut short (a header can be any length)."""
    return text if len(text) <= limit else text[:limit] + "..."


def _header_vault_id(header: str) -> Optional[str]:
    parts = header.strip().split(";")
    return parts[3].strip() if len(parts) >= 4 else None


def _unhex(data: Union[str, bytes], what: str) -> bytes:
    try:
        return binascii.unhexlify(data)
    except (binascii.Error, ValueError):
        raise _Malformed(f"its {what} is not hexadecimal") from None


def _unseal(envelope: str) -> _Sealed:
    """The parts of an envelope, read as Ansible reads them (`parse_vaulttext_envelope`,
    `parse_vaulttext`: body lines joined as they are, without stripping)."""
    if not envelope.isascii():
        raise _Malformed("it holds characters that are not ASCII")
    lines = envelope.splitlines()
    if not lines or not lines[0].startswith(HEADER):
        raise _Malformed(f"it does not start with {HEADER}")
    header = lines[0].strip().split(";")
    if len(header) < 3 or header[0] != HEADER:
        raise _Malformed(f"its header is not {HEADER};VERSION;CIPHER[;VAULT_ID]")
    cipher = header[2].strip()
    if cipher != CIPHER:
        raise _Malformed(f"cipher `{_shown(cipher)}` is not one Ansible Vault has ({CIPHER})")
    parts = _unhex("".join(lines[1:]), "body").split(b"\n", 2)
    if len(parts) != 3:
        raise _Malformed("its body does not hold a salt, an HMAC and a ciphertext")
    salt, mac, ciphertext = (
        _unhex(part, name) for part, name in zip(parts, ("salt", "HMAC", "ciphertext"))
    )
    return _Sealed(_header_vault_id(lines[0]), salt, mac, ciphertext)


def _derive_keys(password: bytes, salt: bytes) -> Tuple[bytes, bytes, bytes]:
    """AES key, HMAC key and CTR counter block for `password` and `salt` (VaultAES256)."""
    derived = PBKDF2HMAC(
        algorithm=hashes.SHA256(),
        length=2 * _KEY_BYTES + _COUNTER_BYTES,
        salt=salt,
        iterations=KDF_ITERATIONS,
    ).derive(password)
    return derived[:_KEY_BYTES], derived[_KEY_BYTES : 2 * _KEY_BYTES], derived[2 * _KEY_BYTES :]


def _open(sealed: _Sealed, password: bytes) -> Optional[bytes]:
    """The plaintext, or None when the HMAC does not match (a wrong password, or altered
    data: the two look the same). Nothing is decrypted before the HMAC is verified."""
    aes_key, mac_key, counter = _derive_keys(password, sealed.salt)
    check = hmac.HMAC(mac_key, hashes.SHA256())
    check.update(sealed.ciphertext)
    try:
        check.verify(sealed.mac)  # constant time
    except InvalidSignature:
        return None
    decryptor = Cipher(algorithms.AES(aes_key), modes.CTR(counter)).decryptor()
    padded = decryptor.update(sealed.ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    plaintext: Optional[bytes] = None
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        pass  # raised below, outside this block: no exception chain near the bytes
    if plaintext is None:
        raise _Malformed("its padding is invalid")
    return plaintext


def candidates(vault_id: Optional[str], secrets: Sequence[VaultSecret]) -> List[VaultSecret]:
    """The secrets in the order Ansible tries them: those given for the envelope's vault id
    (`default` for a 1.1 envelope) first, then the others as configured. The vault id is not
    authenticated (Ansible's own note), so it orders the tries and excludes none."""
    wanted = DEFAULT_VAULT_ID if vault_id is None else vault_id
    if not wanted:
        return list(secrets)
    first = [secret for secret in secrets if secret.vault_id == wanted]
    return first + [secret for secret in secrets if secret.vault_id != wanted]


def _no_password_fits(
    subject: str, sealed: _Sealed, secrets: Sequence[VaultSecret], where: Optional[str]
) -> VaultError:
    """No configured secret opens `sealed`: say how many were tried, for which vault ids,
    and which vault id the envelope names when none of them is it."""
    ids = ", ".join(f"`{_shown(name)}`" for name in dict.fromkeys(s.vault_id for s in secrets))
    if len(secrets) == 1:
        tried = f"the vault password configured (vault id {ids}) does not open it"
    else:
        tried = f"none of the {len(secrets)} vault passwords configured (vault ids {ids}) opens it"
    hint = (
        "a wrong password, or the value was altered: check ANSIBLE_VAULT_PASSWORD_FILE, "
        "--vault-password-file or --vault-id ID@FILE"
    )
    named = sealed.vault_id
    if named and named not in {secret.vault_id for secret in secrets}:
        tried += f"; it was encrypted for vault id `{_shown(named)}`"
        hint = (
            f"give that vault id its password: --vault-id {_shown(named)}@FILE or "
            "ANSIBLE_VAULT_IDENTITY_LIST"
        )
    return VaultError(f"{subject} is vault-encrypted and {tried}", where=where, hint=hint)


def _decrypt_bytes(
    envelope: str, secrets: Sequence[VaultSecret], subject: str, where: Optional[str]
) -> bytes:
    """The plaintext bytes of `envelope`; VaultError naming `subject` if it cannot be had."""
    try:
        sealed = _unseal(envelope)
    except _Malformed as exc:
        raise VaultError(
            f"{subject} is not valid Ansible Vault data: {exc}",
            where=where,
            hint="encrypt it again with `ansible-vault encrypt_string`",
        ) from None
    if not secrets:
        raise VaultError(
            f"{subject} is vault-encrypted and no vault password is configured",
            where=where,
            hint=PASSWORD_HINT,
        )
    for secret in candidates(sealed.vault_id, secrets):
        problem = ""
        try:
            plaintext = _open(sealed, secret.password)
        except _Malformed as exc:
            problem = str(exc)  # raised below: the failure's frames hold the keys
        if problem:
            raise VaultError(f"{subject} is not valid Ansible Vault data: {problem}", where=where)
        if plaintext is not None:
            return plaintext
    raise _no_password_fits(subject, sealed, secrets, where)


def decrypt(
    envelope: str,
    secrets: Sequence[VaultSecret],
    *,
    what: Optional[str] = None,
    where: Optional[str] = None,
) -> str:
    """The plaintext of an Ansible Vault envelope, trying `secrets` in Ansible's order.

    VaultError (one line, naming `what` and `where` when given) for a malformed envelope,
    no secrets, no secret that opens it (wrong password or tampered data), or bytes that
    are not UTF-8."""
    subject = f"`{what}`" if what else "a vault-encrypted value"
    text: Optional[str] = None
    try:
        text = _decrypt_bytes(envelope, secrets, subject, where).decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised below, outside this block: the error object holds the bytes
    if text is None:
        raise VaultError(
            f"{subject} decrypts to bytes that are not UTF-8 text",
            where=where,
            hint="encrypt it again from text",
        )
    return text


def reveal(value: Any, secrets: Sequence[VaultSecret], what: str) -> Any:
    """`value` with every VaultValue in it decrypted (through dicts and lists; `what` names
    the variable in messages, `what.key` / `what[0]` inside it); a value that holds none is
    returned as it is. Call it only for a value a command needs, at the moment it needs it."""
    if isinstance(value, VaultValue):
        return decrypt(value.envelope, secrets, what=what, where=value.where)
    if not has_vault(value):
        return value
    if isinstance(value, Mapping):
        return {key: reveal(item, secrets, f"{what}.{key}") for key, item in value.items()}
    items = [reveal(item, secrets, f"{what}[{index}]") for index, item in enumerate(value)]
    return tuple(items) if isinstance(value, tuple) else items


def has_vault(value: Any) -> bool:
    """Whether `value` is, or holds in its dicts and lists, a VaultValue."""
    if isinstance(value, VaultValue):
        return True
    if isinstance(value, Mapping):
        return any(has_vault(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_vault(item) for item in value)
    return False


# --- vault passwords -------------------------------------------------------------------------


class _Source(NamedTuple):
    """One configured password source: the label it gives, the vault id a client script is
    asked for (None: not asked), the file or script as written, and the setting it came from."""

    label: str
    ask_id: Optional[str]
    location: str
    setting: str


def _identity_list(text: str) -> List[str]:
    """ANSIBLE_VAULT_IDENTITY_LIST as Ansible's `list` config type reads it: comma-separated,
    each stripped and unquoted (empty entries dropped)."""
    entries = []
    for raw in text.split(","):
        entry = raw.strip()
        if len(entry) >= 2 and entry[0] == entry[-1] and entry[0] in "'\"":
            entry = entry[1:-1]
        if entry:
            entries.append(entry)
    return entries


def _from_vault_id(slug: str, default_id: str, setting: str) -> _Source:
    """`ID@SOURCE` or `SOURCE` (Ansible's `split_vault_id`: split at the first `@`)."""
    name, at, location = slug.partition("@")
    if not at:
        name, location = "", slug
    if location in _PROMPTS:
        raise VaultError(
            f"{setting} `{_shown(slug)}` asks for a password prompt, and mlfleet does not prompt",
            hint="give the password in a file: ID@FILE, --vault-password-file FILE or "
            "ANSIBLE_VAULT_PASSWORD_FILE",
        )
    return _Source(name or default_id, name or None, location, setting)


def _sources(
    cli_files: Sequence[str], vault_ids: Sequence[str], environ: Mapping[str, str]
) -> List[_Source]:
    """Every configured source in Ansible's order: identity list, --vault-id, password
    files (the command line's, then ANSIBLE_VAULT_PASSWORD_FILE)."""
    default_id = environ.get("ANSIBLE_VAULT_IDENTITY") or DEFAULT_VAULT_ID
    identities = [
        (slug, "ANSIBLE_VAULT_IDENTITY_LIST")
        for slug in _identity_list(environ.get("ANSIBLE_VAULT_IDENTITY_LIST", ""))
    ] + [(slug, "--vault-id") for slug in vault_ids]
    sources = [_from_vault_id(slug, default_id, setting) for slug, setting in identities]
    files = [(path, "--vault-password-file") for path in cli_files]
    if environ.get("ANSIBLE_VAULT_PASSWORD_FILE"):
        files.append((environ["ANSIBLE_VAULT_PASSWORD_FILE"], "ANSIBLE_VAULT_PASSWORD_FILE"))
    # A password file is Ansible's `default@FILE`: a client script is asked for `default`.
    sources += [_Source(default_id, default_id, path, setting) for path, setting in files]
    return sources


_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")


def _resolve_path(path: str, environ: Mapping[str, str], cwd: str) -> str:
    """`path` as Ansible's `unfrackpath(follow=False)` makes it: `$VAR`/`${VAR}` from
    `environ` (unknown ones left as written), `~`, then absolute against `cwd`."""

    def variable(match: re.Match[str]) -> str:
        name = match.group(1).strip("{}")
        return environ.get(name, match.group(0))

    expanded = _VARIABLE.sub(variable, path)
    if expanded == "~" or expanded.startswith("~/"):
        expanded = (environ.get("HOME") or os.path.expanduser("~")) + expanded[1:]
    else:
        expanded = os.path.expanduser(expanded)
    return os.path.normpath(os.path.join(cwd, expanded))


def is_client_script(location: str) -> bool:
    """Ansible's `script_is_client`: the name, less its extension, ends in `-client`."""
    return os.path.splitext(location)[0].endswith("-client")


def _run_script(path: str, client: bool, ask_id: Optional[str]) -> bytes:
    """The stdout of a password script: run without a shell, stdin closed, stderr left to
    the operator's terminal (as Ansible does), stopped after SCRIPT_TIMEOUT_S. A client
    script is asked for `ask_id`."""
    argv = [path]
    if client and ask_id is not None:
        argv += ["--vault-id", ask_id]
    failure = ""
    done: Optional[subprocess.CompletedProcess[bytes]] = None
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=SCRIPT_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        failure = f"did not finish within {SCRIPT_TIMEOUT_S} s"  # its partial output is dropped
    except OSError as exc:
        failure = f"could not be run ({exc.strerror or type(exc).__name__})"
    kind = "vault password client script" if client else "vault password script"
    if done is None:
        raise VaultError(
            f"{kind} {path} {failure}",
            hint="run it by hand to check it; if it is a plain password file, remove its "
            "executable bit",
        )
    if client and done.returncode == _CLIENT_UNKNOWN_ID:
        raise VaultError(
            f"{kind} {path} has no password for vault id `{ask_id}`",
            hint=f"run `{path} --vault-id {ask_id}` by hand to check it",
        )
    if done.returncode != 0:
        raise VaultError(
            f"{kind} {path} failed (exit status {done.returncode})",
            hint="run it by hand to see why",
        )
    return done.stdout.strip(b"\r\n")


def _read_file(path: str, loaded: Sequence[VaultSecret]) -> bytes:
    """A password file's content as Ansible reads it: stripped of surrounding whitespace,
    decrypted with the passwords read before it if it is itself vault-encrypted, then
    stripped of line ends."""
    failure = ""
    content = b""
    try:
        with open(path, "rb") as handle:
            content = handle.read().strip()
    except OSError as exc:
        failure = exc.strerror or type(exc).__name__
    if failure:
        raise VaultError(
            f"vault password file {path} cannot be read ({failure})",
            hint="check its permissions, or point the setting at another file",
        )
    if content.startswith(HEADER.encode()):
        envelope = content.decode("ascii", "replace")
        content = _decrypt_bytes(envelope, loaded, f"vault password file {path}", None)
    return content.strip(b"\r\n")


def _load(
    source: _Source, loaded: Sequence[VaultSecret], environ: Mapping[str, str], cwd: str
) -> VaultSecret:
    path = _resolve_path(source.location, environ, cwd)
    if not os.path.exists(path):
        raise VaultError(
            f"vault password file {path} (from {source.setting}) does not exist",
            hint=f"fix the path, or unset {source.setting}"
            if source.setting.startswith("ANSIBLE_")
            else "fix the path",
        )
    if os.path.isdir(path):
        raise VaultError(
            f"vault password file {path} (from {source.setting}) is a directory",
            hint="name the file that holds the password",
        )
    script = bool(os.stat(path).st_mode & 0o111)  # any execute bit, as Ansible tests it
    if script:
        password = _run_script(path, is_client_script(source.location), source.ask_id)
    else:
        password = _read_file(path, loaded)
    if not password:
        raise VaultError(
            f"{'vault password script' if script else 'vault password file'} {path} "
            "gave an empty password",
            hint="a vault password cannot be empty",
        )
    return VaultSecret(source.label, password, path)


def load_vault_secrets(
    cli_files: Sequence[str],
    environ: Mapping[str, str],
    *,
    vault_ids: Sequence[str] = (),
    cwd: Optional[str] = None,
) -> List[VaultSecret]:
    """The vault passwords configured, in the order Ansible tries them.

    `cli_files` are the `--vault-password-file` options, `vault_ids` the `--vault-id
    [ID@]FILE` ones; `environ` is read for ANSIBLE_VAULT_IDENTITY_LIST,
    ANSIBLE_VAULT_PASSWORD_FILE and ANSIBLE_VAULT_IDENTITY (the default label); relative
    paths are taken from `cwd` (the current directory). Scripts are run, so call this only
    when a command needs a vault value. A missing or unreadable file, a failing script, an
    empty password or a `prompt` source is a VaultError naming the file and the setting
    (Ansible only warns about a bad source when another one works; mlfleet stops)."""
    base = os.getcwd() if cwd is None else cwd
    secrets: List[VaultSecret] = []
    for source in _sources(cli_files, vault_ids, environ):
        secrets.append(_load(source, secrets, environ, base))
    return secrets


class SecretText(str):
    """Text decrypted from a wholly vault-encrypted vars file: usable as the text it is (a
    template fills it in), but its repr, and mlfleet's listings, show only where it came
    from."""

    source: str = ""

    def __repr__(self) -> str:
        return f"<vault-encrypted in {self.source}>"

    @property
    def shown(self) -> str:
        return repr(self)


def hide_text(value: Any, source: str = "") -> Any:
    """`value` (parsed YAML: dicts, lists, scalars) with every string a SecretText of
    `source`; dicts and lists keep their class (and the lines they know)."""
    if isinstance(value, str):
        secret = SecretText(value)
        secret.source = source
        return secret
    if isinstance(value, dict):
        for key in list(value):
            value[key] = hide_text(value[key], source)
        return value
    if isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = hide_text(item, source)
        return value
    return value


class Keyring:
    """The vault passwords of one mlfleet command: where they come from is set once, from the
    command line (`configure`); they are read (files read, scripts run) the first time a value
    that a command needs is vault-encrypted, and kept for the rest of the command only."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        self._environ = environ
        self._files: Tuple[str, ...] = ()
        self._ids: Tuple[str, ...] = ()
        self._secrets: Optional[List[VaultSecret]] = None

    def configure(self, password_files: Sequence[str] = (), vault_ids: Sequence[str] = ()) -> None:
        """`--vault-password-file` and `--vault-id` options (ANSIBLE_VAULT_* are read too)."""
        self._files, self._ids, self._secrets = tuple(password_files), tuple(vault_ids), None

    @property
    def password_files(self) -> Tuple[str, ...]:
        """The `--vault-password-file` options given (not the passwords)."""
        return self._files

    @property
    def vault_ids(self) -> Tuple[str, ...]:
        """The `--vault-id` options given (not the passwords)."""
        return self._ids

    def reveal(self, value: Any, what: str) -> Any:
        """`value` with its vault-encrypted parts decrypted (see `reveal`); a value without
        any is returned as it is, and reads no password."""
        if not has_vault(value):
            return value
        if self._secrets is None:
            environ = os.environ if self._environ is None else self._environ
            self._secrets = load_vault_secrets(self._files, environ, vault_ids=self._ids)
        return reveal(value, self._secrets, what)


KEYRING = Keyring()  # the command's; cli.py configures it


class RevealedVars(Mapping[str, Any]):
    """A host's variables as a template reads them: a vault-encrypted one decrypted by
    `keyring` when it is read (and not kept), the others as they are."""

    def __init__(self, variables: Mapping[str, Any], host: str, keyring: Keyring) -> None:
        self._vars, self._host, self._keyring = variables, host, keyring

    def __getitem__(self, key: str) -> Any:
        return self._keyring.reveal(self._vars[key], f"{key} of host {self._host}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)
