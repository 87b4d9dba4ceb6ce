"""Ansible Vault values: envelopes recorded from ansible-vault decrypt to what Ansible itself
decrypted; wrong passwords, altered and malformed data are one line each; passwords come from
files, scripts and settings as Ansible reads them; no password or plaintext ever shows."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from mlfleet.controller import ansible_vault
from mlfleet.controller.ansible_vault import (
    VaultError,
    VaultSecret,
    VaultValue,
    candidates,
    decrypt,
    has_vault,
    load_vault_secrets,
    reveal,
)
from mlfleet.controller.errors import ConfigError, ExitCode
from tests.paths import FIXTURES

VAULT = FIXTURES / "vault"
DEFAULT_PASSWORD = b"test-only-default-password"
PROD_PASSWORD = b"test-only-prod-password"
LISTED: Dict[str, Any] = json.loads((VAULT / "inventory.list.json").read_text())
PLAINTEXTS: Dict[str, Dict[str, str]] = json.loads(
    (VAULT / "plaintexts.json").read_text(encoding="utf-8")
)
DEFAULT = VaultSecret("default", DEFAULT_PASSWORD, "default.pass")
PROD = VaultSecret("prod", PROD_PASSWORD, "prod.pass")


def _recorded() -> Iterator[Tuple[str, str, str]]:
    """(variable, envelope, plaintext) for every value ansible-inventory listed."""
    for host, variables in LISTED["_meta"]["hostvars"].items():
        for name, value in variables.items():
            yield name, value["__ansible_vault"], PLAINTEXTS[host][name]


RECORDED = {name: (envelope, plaintext) for name, envelope, plaintext in _recorded()}


def seal(
    plaintext: bytes,
    password: bytes,
    *,
    vault_id: Optional[str] = None,
    salt: Optional[bytes] = None,
    pad: bool = True,
) -> str:
    """Test-only encryption in Ansible's format (VaultAES256.encrypt and
    format_vaulttext_envelope), written apart from the module: hashlib's PBKDF2, hmac, PKCS#7
    by hand."""
    salt = os.urandom(32) if salt is None else salt
    derived = hashlib.pbkdf2_hmac("sha256", password, salt, 10000, 80)
    aes_key, mac_key, counter = derived[:32], derived[32:64], derived[64:]
    if pad:
        size = 16 - len(plaintext) % 16
        plaintext += bytes([size]) * size
    encryptor = Cipher(algorithms.AES(aes_key), modes.CTR(counter)).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    mac = hmac.new(mac_key, ciphertext, hashlib.sha256).hexdigest().encode()
    body = binascii.hexlify(
        b"\n".join([binascii.hexlify(salt), mac, binascii.hexlify(ciphertext)])
    ).decode()
    header = f"$ANSIBLE_VAULT;1.2;AES256;{vault_id}" if vault_id else "$ANSIBLE_VAULT;1.1;AES256"
    return "\n".join([header] + [body[i : i + 80] for i in range(0, len(body), 80)]) + "\n"


def _parts(envelope: str) -> Tuple[str, List[bytes]]:
    """Header and [salt hex, HMAC hex, ciphertext hex] of an envelope."""
    header, *lines = envelope.splitlines()
    return header, binascii.unhexlify("".join(lines)).split(b"\n", 2)


def _envelope(header: str, parts: List[bytes]) -> str:
    return header + "\n" + binascii.hexlify(b"\n".join(parts)).decode() + "\n"


def _shown(exc: BaseException) -> str:
    """Everything an error could show: its text, repr, hint, and its whole traceback with
    chained exceptions."""
    return "\n".join(
        [
            str(exc),
            repr(exc),
            repr(exc.args),
            str(getattr(exc, "hint", "")),
            *traceback.format_exception(type(exc), exc, exc.__traceback__),
        ]
    )


def _assert_nothing_secret(exc: BaseException, *secrets: str) -> None:
    shown = _shown(exc)
    for secret in (*secrets, DEFAULT_PASSWORD.decode(), PROD_PASSWORD.decode()):
        assert secret not in shown
    assert "\n" not in str(exc)  # one line


# --- recorded from Ansible -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_each_recorded_value_decrypts_to_what_ansible_decrypted(name: str) -> None:
    envelope, plaintext = RECORDED[name]
    assert decrypt(envelope, [DEFAULT, PROD], what=name) == plaintext


def test_the_recorded_values_cover_1_1_and_1_2_multiline_unicode_and_a_whole_padding_block():
    headers = {envelope.splitlines()[0] for envelope, _ in RECORDED.values()}
    assert headers == {"$ANSIBLE_VAULT;1.1;AES256", "$ANSIBLE_VAULT;1.2;AES256;prod"}
    texts = [text for _, text in RECORDED.values()]
    assert any("\n" in t for t in texts) and any(not t.isascii() for t in texts)
    assert any(len(t.encode()) % 16 == 0 for t in texts)


def test_a_value_prints_as_ansible_inventory_lists_it_and_shows_only_where_it_is():
    envelope, plaintext = RECORDED["prod_token"]
    value = VaultValue(envelope, "inventory.yml:42")
    assert value.to_json() == LISTED["_meta"]["hostvars"]["edge-2"]["prod_token"]
    for shown in (repr(value), str(value), f"{value}", repr([value]), repr({"k": value})):
        assert "inventory.yml:42" in shown and "vault-encrypted" in shown
        assert "$ANSIBLE_VAULT" not in shown and plaintext not in shown
    assert value.vault_id == "prod"
    assert VaultValue(RECORDED["simple"][0], "x").vault_id is None


def test_a_secret_never_shows_its_password():
    secret = load_vault_secrets([str(VAULT / "default.pass")], {})[0]
    assert secret == VaultSecret("default", DEFAULT_PASSWORD, str(VAULT / "default.pass"))
    assert DEFAULT_PASSWORD.decode() not in repr(secret) + str(secret) + repr([secret])


# --- refused ---------------------------------------------------------------------------------


def test_a_wrong_password_is_one_line_naming_the_value_and_where():
    envelope, plaintext = RECORDED["simple"]
    with pytest.raises(VaultError) as caught:
        decrypt(envelope, [PROD], what="simple", where="inventory.yml:4")
    assert str(caught.value).startswith(
        "inventory.yml:4: `simple` is vault-encrypted and the vault password configured "
        "(vault id `prod`) does not open it"
    )
    assert caught.value.exit_code == ExitCode.USAGE and isinstance(caught.value, ConfigError)
    _assert_nothing_secret(caught.value, plaintext)


def test_several_wrong_passwords_are_counted_and_a_missing_vault_id_is_named():
    envelope, plaintext = RECORDED["prod_token"]
    wrong = [VaultSecret("default", b"nope-1"), VaultSecret("dev", b"nope-2")]
    with pytest.raises(VaultError) as caught:
        decrypt(envelope, wrong, what="prod_token")
    message = str(caught.value)
    assert "none of the 2 vault passwords configured (vault ids `default`, `dev`)" in message
    assert "it was encrypted for vault id `prod`" in message
    assert "--vault-id prod@FILE" in message
    _assert_nothing_secret(caught.value, plaintext, "nope-1", "nope-2")


@pytest.mark.parametrize("part", [0, 1, 2], ids=["salt", "hmac", "ciphertext"])
def test_altered_data_is_refused_before_anything_is_decrypted(part: int):
    envelope, plaintext = RECORDED["multiline"]
    header, parts = _parts(envelope)
    digits = bytearray(parts[part])
    digits[-1] = ord("0") if digits[-1] != ord("0") else ord("1")
    parts[part] = bytes(digits)
    with pytest.raises(VaultError, match="does not open it") as caught:
        decrypt(_envelope(header, parts), [DEFAULT])
    _assert_nothing_secret(caught.value, plaintext)


def test_an_altered_vault_id_still_decrypts_as_in_ansible():
    """The vault id is not authenticated: it only orders the tries (Ansible's own note)."""
    envelope, plaintext = RECORDED["prod_token"]
    relabelled = envelope.replace(";prod\n", ";other\n")
    assert decrypt(relabelled, [DEFAULT, PROD]) == plaintext


MALFORMED = {
    "empty": ("", "does not start with $ANSIBLE_VAULT"),
    "plain text": ("hunter2", "does not start with $ANSIBLE_VAULT"),
    "not ascii": ("$ANSIBLE_VAULT;1.1;AES256\n3132é\n", "not ASCII"),
    "short header": ("$ANSIBLE_VAULT;1.1\n3132\n", "header is not"),
    "header prefix": ("$ANSIBLE_VAULTX;1.1;AES256\n3132\n", "header is not"),
    "cipher": ("$ANSIBLE_VAULT;1.1;AES128\n3132\n", "cipher `AES128`"),
    "body not hex": ("$ANSIBLE_VAULT;1.1;AES256\nzz\n", "body is not hexadecimal"),
    "body odd length": ("$ANSIBLE_VAULT;1.1;AES256\n313\n", "body is not hexadecimal"),
    "indented body": ("$ANSIBLE_VAULT;1.1;AES256\n  3132\n", "body is not hexadecimal"),
    "two parts": (
        "$ANSIBLE_VAULT;1.1;AES256\n" + binascii.hexlify(b"00\n00").decode(),
        "does not hold a salt, an HMAC and a ciphertext",
    ),
    "salt not hex": (
        "$ANSIBLE_VAULT;1.1;AES256\n" + binascii.hexlify(b"zz\n00\n00").decode(),
        "salt is not hexadecimal",
    ),
    "hmac not hex": (
        "$ANSIBLE_VAULT;1.1;AES256\n" + binascii.hexlify(b"00\n0\n00").decode(),
        "HMAC is not hexadecimal",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_data_is_one_line_saying_what_is_wrong(name: str):
    envelope, reason = MALFORMED[name]
    with pytest.raises(VaultError) as caught:
        decrypt(envelope, [DEFAULT], what="db_password", where="inv.yml:7")
    message = str(caught.value)
    assert message.startswith("inv.yml:7: `db_password` is not valid Ansible Vault data: ")
    assert reason in message and "\n" not in message


def test_a_long_cipher_name_is_cut_short_in_the_message():
    with pytest.raises(VaultError) as caught:
        decrypt("$ANSIBLE_VAULT;1.1;" + "X" * 5000 + "\n00\n", [DEFAULT])
    assert len(str(caught.value)) < 300


def test_invalid_padding_behind_a_valid_hmac_is_refused_without_the_bytes():
    envelope = seal(b"sixteen byte msg" + b"tail-with-0\x00", DEFAULT_PASSWORD, pad=False)
    with pytest.raises(VaultError, match="padding is invalid") as caught:
        decrypt(envelope, [DEFAULT])
    _assert_nothing_secret(caught.value, "sixteen byte msg", "tail-with-0")
    assert caught.value.__context__ is None


def test_a_plaintext_that_is_not_utf8_is_refused_without_the_bytes():
    envelope = seal(b"latin-1 \xe9t\xe9 secret", DEFAULT_PASSWORD)
    with pytest.raises(VaultError, match="not UTF-8 text") as caught:
        decrypt(envelope, [DEFAULT], what="motd")
    _assert_nothing_secret(caught.value, "secret")
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_no_password_is_the_line_the_operator_acts_on():
    value = VaultValue(RECORDED["simple"][0], "inventory.yml:12")
    with pytest.raises(VaultError) as caught:
        reveal(value, [], "ansible_become_password")
    assert str(caught.value) == (
        "inventory.yml:12: `ansible_become_password` is vault-encrypted and no vault password "
        "is configured (set ANSIBLE_VAULT_PASSWORD_FILE or pass --vault-password-file)"
    )


# --- which secret first ----------------------------------------------------------------------


def test_the_envelopes_vault_id_is_tried_first_then_the_others_in_order():
    dev = VaultSecret("dev", b"d")
    prod2 = VaultSecret("prod", b"p2")
    assert candidates("prod", [DEFAULT, dev, PROD, prod2]) == [PROD, prod2, DEFAULT, dev]
    # A 1.1 envelope names no id: Ansible takes it as `default`.
    assert candidates(None, [dev, PROD, DEFAULT]) == [DEFAULT, dev, PROD]
    assert candidates("", [dev, DEFAULT]) == [dev, DEFAULT]
    assert candidates("absent", [dev, DEFAULT]) == [dev, DEFAULT]


def test_a_1_2_value_decrypts_whatever_the_order_of_the_secrets():
    envelope, plaintext = RECORDED["prod_token"]
    assert decrypt(envelope, [DEFAULT, PROD]) == plaintext
    assert decrypt(envelope, [PROD, DEFAULT]) == plaintext


# --- reveal and has_vault --------------------------------------------------------------------


def test_reveal_decrypts_values_inside_dicts_and_lists_and_leaves_the_rest_as_it_is():
    simple, multiline = RECORDED["simple"], RECORDED["multiline"]
    plain = {"port": 22, "tags": ["a", "b"]}
    assert reveal(plain, [], "x") is plain
    assert reveal("text", [], "x") == "text" and reveal(None, [], "x") is None
    nested = {
        "user": "edge",
        "keys": [VaultValue(simple[0], "a.yml:2"), "plain"],
        "pair": (1, VaultValue(multiline[0], "a.yml:3")),
    }
    assert has_vault(nested) and not has_vault(plain) and not has_vault("$ANSIBLE_VAULT;1.1")
    assert reveal(nested, [DEFAULT], "creds") == {
        "user": "edge",
        "keys": [simple[1], "plain"],
        "pair": (1, multiline[1]),
    }
    assert nested["keys"][0] == VaultValue(simple[0], "a.yml:2")  # not changed in place


def test_reveal_names_the_path_to_a_nested_value():
    nested = {"creds": [{"token": VaultValue(RECORDED["simple"][0], "b.yml:9")}]}
    with pytest.raises(VaultError) as caught:
        reveal(nested, [], "mlfleet_registry")
    assert str(caught.value).startswith(
        "b.yml:9: `mlfleet_registry.creds[0].token` is vault-encrypted"
    )


# --- vault passwords -------------------------------------------------------------------------


def _write(path: Path, content: str, mode: int = 0o600) -> str:
    path.write_text(content)
    path.chmod(mode)
    return str(path)


def test_a_password_file_is_read_as_ansible_reads_it(tmp_path: Path):
    # Whole-content strip, then line ends: the trailing newline of an editor, CRLF too.
    path = _write(tmp_path / "pw", "  \r\n test-only-default-password\r\n\n")
    (secret,) = load_vault_secrets([path], {})
    assert secret.password == DEFAULT_PASSWORD and secret.vault_id == "default"
    assert decrypt(RECORDED["simple"][0], [secret]) == RECORDED["simple"][1]


def test_sources_come_in_ansibles_order_with_their_labels(tmp_path: Path):
    files = {name: _write(tmp_path / name, f"pw-{name}\n") for name in ("a", "b", "c", "d", "e")}
    environ = {
        "ANSIBLE_VAULT_IDENTITY_LIST": f" dev@{files['a']}, 'ops@{files['b']}' ,",
        "ANSIBLE_VAULT_PASSWORD_FILE": files["e"],
    }
    secrets = load_vault_secrets([files["d"]], environ, vault_ids=[f"prod@{files['c']}"])
    assert [(s.vault_id, s.password) for s in secrets] == [
        ("dev", b"pw-a"),
        ("ops", b"pw-b"),
        ("prod", b"pw-c"),
        ("default", b"pw-d"),
        ("default", b"pw-e"),
    ]


def test_a_vault_id_without_a_label_and_a_renamed_default_label(tmp_path: Path):
    path = _write(tmp_path / "pw", "x\n")
    environ = {"ANSIBLE_VAULT_IDENTITY": "team"}
    secrets = load_vault_secrets([path], environ, vault_ids=[path, f"@{path}"])
    assert [s.vault_id for s in secrets] == ["team", "team", "team"]
    assert load_vault_secrets([], {}) == []
    assert load_vault_secrets([], {"ANSIBLE_VAULT_PASSWORD_FILE": ""}) == []


def test_paths_expand_variables_and_home_and_are_taken_from_cwd(tmp_path: Path):
    (tmp_path / "home").mkdir()
    _write(tmp_path / "home" / "pw", "from-home\n")
    _write(tmp_path / "rel", "from-cwd\n")
    environ = {"HOME": str(tmp_path / "home"), "VDIR": str(tmp_path / "home")}
    assert [
        s.password
        for s in load_vault_secrets(
            ["~/pw", "$VDIR/pw", "${VDIR}/pw", "rel"], environ, cwd=str(tmp_path)
        )
    ] == [b"from-home", b"from-home", b"from-home", b"from-cwd"]


def test_a_vault_encrypted_password_file_opens_with_a_password_read_before_it(tmp_path: Path):
    inner = _write(tmp_path / "inner", seal(PROD_PASSWORD + b"\n", DEFAULT_PASSWORD))
    outer = str(VAULT / "default.pass")
    secrets = load_vault_secrets([], {}, vault_ids=[f"default@{outer}", f"prod@{inner}"])
    assert [(s.vault_id, s.password) for s in secrets] == [
        ("default", DEFAULT_PASSWORD),
        ("prod", PROD_PASSWORD),
    ]
    with pytest.raises(VaultError) as caught:
        load_vault_secrets([], {}, vault_ids=[f"prod@{inner}"])
    assert str(caught.value).startswith(
        f"vault password file {inner} is vault-encrypted and no vault password is configured"
    )
    _assert_nothing_secret(caught.value)


def _script(tmp_path: Path, name: str, body: str) -> str:
    return _write(tmp_path / name, "#!/bin/sh\n" + body, 0o700)


def test_an_executable_file_is_run_and_prints_the_password(tmp_path: Path):
    script = _script(tmp_path, "vault-pass.sh", 'printf "%s\\r\\n" test-only-prod-password\n')
    (secret,) = load_vault_secrets([], {}, vault_ids=[f"prod@{script}"])
    assert secret.password == PROD_PASSWORD and secret.vault_id == "prod"
    # Only line ends are stripped from a script's answer (a file's is stripped whole).
    spaced = _script(tmp_path, "spaced.sh", "printf ' spaced pw \\n'\n")
    assert load_vault_secrets([spaced], {})[0].password == b" spaced pw "


def test_a_script_runs_without_a_shell_with_stdin_closed_and_no_arguments(tmp_path: Path):
    record = tmp_path / "seen"
    script = _script(tmp_path, "pw with space.sh", f'echo "$#:$(cat)" > "{record}"\necho secret\n')
    load_vault_secrets([script], {})
    assert record.read_text() == "0:\n"


def test_a_client_script_is_asked_for_its_vault_id(tmp_path: Path):
    client = _script(
        tmp_path,
        "keyring-client.py",
        'test "$1" = --vault-id || exit 9\ncase "$2" in prod) echo p-secret;; '
        "default) echo d-secret;; *) exit 2;; esac\n",
    )
    secrets = load_vault_secrets([client], {}, vault_ids=[f"prod@{client}"])
    assert [(s.vault_id, s.password) for s in secrets] == [
        ("prod", b"p-secret"),
        ("default", b"d-secret"),
    ]
    with pytest.raises(VaultError) as caught:
        load_vault_secrets([], {}, vault_ids=[f"dev@{client}"])
    assert str(caught.value).startswith(
        f"vault password client script {client} has no password for vault id `dev`"
    )


def test_a_failing_script_is_one_line_without_what_it_printed(tmp_path: Path):
    script = _script(tmp_path, "pw.sh", "echo half-a-password-42\nexit 3\n")
    with pytest.raises(VaultError) as caught:
        load_vault_secrets([script], {})
    assert str(caught.value).startswith(f"vault password script {script} failed (exit status 3)")
    _assert_nothing_secret(caught.value, "half-a-password-42")


def test_a_script_that_hangs_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ansible_vault, "SCRIPT_TIMEOUT_S", 0.3)
    script = _script(tmp_path, "pw.sh", "printf partial-password-77\nexec sleep 30\n")
    with pytest.raises(VaultError, match=r"did not finish within 0.3 s") as caught:
        load_vault_secrets([script], {})
    _assert_nothing_secret(caught.value, "partial-password-77")
    assert caught.value.__context__ is None


def test_an_executable_file_that_is_no_program_says_to_drop_the_bit(tmp_path: Path):
    path = tmp_path / "pw"
    path.write_bytes(b"\x7fELF\x00garbage")
    path.chmod(0o755)
    with pytest.raises(VaultError, match=r"could not be run .*remove its executable bit"):
        load_vault_secrets([str(path)], {})


@pytest.mark.parametrize(
    ("setting", "hint"),
    [("--vault-password-file", "fix the path"), ("ANSIBLE_VAULT_PASSWORD_FILE", "unset")],
)
def test_a_missing_file_names_the_file_and_the_setting(tmp_path: Path, setting: str, hint: str):
    missing = str(tmp_path / "nope")
    args: Tuple[List[str], Dict[str, str]] = (
        ([missing], {}) if setting.startswith("--") else ([], {setting: missing})
    )
    with pytest.raises(VaultError) as caught:
        load_vault_secrets(*args)
    message = str(caught.value)
    assert message.startswith(f"vault password file {missing} (from {setting}) does not exist")
    assert hint in message


def test_a_directory_an_empty_file_and_a_prompt_are_refused(tmp_path: Path):
    with pytest.raises(VaultError, match="is a directory"):
        load_vault_secrets([str(tmp_path)], {})
    empty = _write(tmp_path / "empty", "\n\n")
    with pytest.raises(VaultError, match="gave an empty password"):
        load_vault_secrets([empty], {})
    for slug in ("prod@prompt", "prompt", "@prompt_ask_vault_pass"):
        with pytest.raises(VaultError, match="mlfleet does not prompt"):
            load_vault_secrets([], {}, vault_ids=[slug])
    with pytest.raises(VaultError, match="ANSIBLE_VAULT_IDENTITY_LIST `dev@prompt`"):
        load_vault_secrets([], {"ANSIBLE_VAULT_IDENTITY_LIST": "dev@prompt"})


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_so(tmp_path: Path):
    path = _write(tmp_path / "pw", "secret\n", 0o000)
    with pytest.raises(VaultError, match="cannot be read"):
        load_vault_secrets([path], {})


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(max_size=200),
    password=st.binary(min_size=1, max_size=40),
    vault_id=st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True)),
)
def test_what_is_sealed_in_ansibles_format_is_opened(
    text: str, password: bytes, vault_id: Optional[str]
):
    envelope = seal(text.encode("utf-8"), password, vault_id=vault_id)
    assert decrypt(envelope, [VaultSecret(vault_id or "default", password)]) == text


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_one_changed_hex_digit_never_gives_another_plaintext(data: st.DataObject):
    text = "the secret text"
    envelope = seal(text.encode(), DEFAULT_PASSWORD)
    header, body = envelope.split("\n", 1)
    positions = [i for i, char in enumerate(body) if char != "\n"]
    at = data.draw(st.sampled_from(positions))
    digit = data.draw(st.sampled_from([d for d in "0123456789abcdef" if d != body[at]]))
    altered = f"{header}\n{body[:at]}{digit}{body[at + 1 :]}"
    try:
        result = decrypt(altered, [DEFAULT])
    except VaultError as exc:
        _assert_nothing_secret(exc, text)
    else:
        # Only a change of letter case inside the inner hex leaves the bytes as they were.
        assert result == text


# --- live, where Ansible is installed --------------------------------------------------------


def _encrypt_string(*args: str, cwd: Path) -> str:
    """The envelope of an `ansible-vault encrypt_string` answer (`!vault |` and its lines)."""
    out = subprocess.run(
        ["ansible-vault", "encrypt_string", *args],
        capture_output=True, text=True, check=True, cwd=cwd, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    ).stdout  # fmt: skip
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("$ANSIBLE_VAULT"))
    return "\n".join(line.strip() for line in lines[start:] if line.strip()) + "\n"


@pytest.mark.skipif(shutil.which("ansible-vault") is None, reason="ansible-vault not installed")
def test_a_fresh_ansible_vault_value_decrypts(tmp_path: Path):
    _write(tmp_path / "pw", "fresh-password\n")
    _write(tmp_path / "prod", "fresh-prod\n")
    text = "fresh: ü ✓ 🔑\nsecond line"
    plain = _encrypt_string("--vault-password-file", "pw", text, cwd=tmp_path)
    labelled = _encrypt_string("--vault-id", "prod@prod", text, cwd=tmp_path)
    assert labelled.startswith("$ANSIBLE_VAULT;1.2;AES256;prod\n")
    secrets = load_vault_secrets(["pw"], {}, vault_ids=["prod@prod"], cwd=str(tmp_path))
    assert decrypt(plain, secrets) == text and decrypt(labelled, secrets) == text
