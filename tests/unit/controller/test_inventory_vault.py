"""Inventories with Ansible Vault and `!unsafe` values: listed as ansible-inventory lists them,
decrypted only for a value a command uses, with a password configured as Ansible users do."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict

import pytest

from mlfleet.controller.ansible_vault import Keyring, VaultError, VaultValue
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.inventory import load_inventory, parse_inventory
from mlfleet.controller.playbook import Template
from mlfleet.controller.yamlsource import load_yaml_text
from tests.paths import FIXTURES

VAULT = FIXTURES / "vault"
PLAINTEXTS: Dict[str, Dict[str, str]] = json.loads((VAULT / "plaintexts.json").read_text())


def test_vault_values_are_listed_encrypted_exactly_as_ansible_inventory_lists_them():
    listed = load_inventory(VAULT / "inventory.yml").to_dict()
    ansible = json.loads((VAULT / "inventory.list.json").read_text())["_meta"]["hostvars"]
    assert {h: d["vars"] for h, d in listed["hosts"].items()} == ansible
    assert "db-pa55word" not in json.dumps(listed)


def test_a_setting_is_decrypted_with_the_password_file_and_only_when_read(tmp_path: Path):
    inventory = load_inventory(VAULT / "inventory.yml")
    env = {"ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT / "default.pass")}
    keyring = Keyring(environ=env)
    host = dataclasses.replace(
        inventory.hosts["edge-1"],
        vars={
            **inventory.hosts["edge-1"].vars,
            "ansible_user": inventory.hosts["edge-1"].vars["simple"],
        },
        keyring=keyring,
    )
    assert isinstance(host.vars["ansible_user"], VaultValue)  # kept encrypted
    assert host.user == PLAINTEXTS["edge-1"]["simple"]


def test_without_a_password_a_needed_value_is_one_line_naming_host_and_variable():
    inventory = load_inventory(VAULT / "inventory.yml")
    host = inventory.hosts["edge-1"]
    host = dataclasses.replace(
        host, vars={**host.vars, "ansible_user": host.vars["simple"]}, keyring=Keyring(environ={})
    )
    assert inventory.select("edge-1")  # listing and selecting need no password
    with pytest.raises(VaultError) as err:
        _ = host.user
    line = str(err.value)
    assert "ansible_user of host edge-1" in line and "no vault password is configured" in line
    assert "ANSIBLE_VAULT_PASSWORD_FILE" in line and len(line.splitlines()) == 1


def test_a_playbook_template_gets_the_decrypted_value(monkeypatch: pytest.MonkeyPatch):
    from mlfleet.controller import ansible_vault

    keyring = Keyring(environ={"ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT / "default.pass")})
    monkeypatch.setattr(ansible_vault, "KEYRING", keyring)
    monkeypatch.setattr("mlfleet.controller.playbook.KEYRING", keyring)
    host = load_inventory(VAULT / "inventory.yml").hosts["edge-1"]
    template = Template("{{ simple }}", "container.env.DB_PASSWORD", "pb.yml:9")
    assert template.render(host.vars, host.name) == PLAINTEXTS["edge-1"]["simple"]


def test_unsafe_text_is_kept_as_written_and_never_evaluated():
    doc = load_yaml_text(
        "all:\n  hosts:\n    web1:\n      ansible_user: !unsafe '{{ not_a_template }}'\n", "inv.yml"
    )
    host = parse_inventory(doc, "inv.yml").hosts["web1"]
    # Read as text (not a template, which would say "cannot evaluate"): its spaces refused.
    with pytest.raises(ConfigError, match="must be one word, without spaces"):
        _ = host.user
    assert host.vars["ansible_user"] == "{{ not_a_template }}"


def test_a_wholly_encrypted_vars_file_is_read_with_the_password_and_never_listed(
    monkeypatch: pytest.MonkeyPatch,
):
    from mlfleet.controller import ansible_vault, inventory

    keyring = Keyring(environ={"ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT / "default.pass")})
    monkeypatch.setattr(inventory, "KEYRING", keyring)
    loaded = load_inventory(VAULT / "whole-file" / "inventory.yml")
    host = loaded.hosts["edge-1"]
    assert host.registry == "vaulted.example.com:5000"  # decrypted, and used
    assert host.vars["site"] == "lyon"  # the clear file beside it
    template = Template("{{ registry_password }}", "container.env.PASSWORD", "pb.yml:3")
    assert template.render(host.vars, host.name) == "s3cret-from-file"
    listed = json.dumps(loaded.to_dict())
    assert "s3cret-from-file" not in listed and "vaulted.example.com" not in listed
    assert "<vault-encrypted in " in listed
    assert "s3cret" not in repr(host.vars)
    # Without a password: one line naming the file, as Ansible refuses it too.
    monkeypatch.setattr(inventory, "KEYRING", ansible_vault.Keyring(environ={}))
    with pytest.raises(VaultError) as err:
        load_inventory(VAULT / "whole-file" / "inventory.yml")
    assert "group_vars/all/vault.yml" in str(err.value) and len(str(err.value).splitlines()) == 1
