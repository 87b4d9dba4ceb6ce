"""Inventories read through ansible-inventory: which kind a source is, --list's JSON as an
Inventory (recorded outputs), Ansible's failures as one line, the process boundary (small
fake ansible-inventory scripts), and, where Ansible is installed, the real thing."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any, Dict, Set

import pytest

from mlfleet.controller import ansible_source, inventory
from mlfleet.controller.ansible_source import (
    ANSIBLE_INVENTORY_ENV,
    ANSIBLE_SETTINGS,
    ansible_environment,
    ansible_failure,
    ansible_inventory_command,
    find_ansible_inventory,
    inventory_from_ansible_json,
    kind_of,
    load_with_ansible,
)
from mlfleet.controller.ansible_vault import VaultValue
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.inventory import Inventory
from mlfleet.controller.templating import UnsafeText, is_template
from tests.paths import FIXTURES as ALL_FIXTURES
from tests.unit.controller.bounded import CAP_SECONDS, within

FIXTURES = ALL_FIXTURES / "ansible-source"
RECORDED = FIXTURES / "recorded"
KIND_CASES = sorted(p.parent for p in (FIXTURES / "kinds").glob("*/SOURCE.txt"))


def recorded(name: str) -> Dict[str, Any]:
    return json.loads((RECORDED / f"{name}.list.json").read_text())


def from_recording(name: str, source: str = "src") -> Inventory:
    return inventory_from_ansible_json(recorded(name), source)


def recorded_stderr(name: str) -> str:
    return (RECORDED / f"{name}.stderr.txt").read_text().replace("{fixtures}", str(FIXTURES))


def source_field(case: Path, key: str) -> str:
    lines = (case / "SOURCE.txt").read_text().splitlines()
    return next(line.split(": ", 1)[1] for line in lines if line.startswith(f"{key}: "))


def write(path: Path, text: str, executable: bool = False) -> Path:
    path.write_text(text)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# --- kind_of ------------------------------------------------------------------------------


def test_every_conformance_case_is_there():
    assert len(KIND_CASES) == 47


@pytest.mark.parametrize("case", KIND_CASES, ids=lambda p: p.name)
def test_kind_of_every_conformance_case(case: Path):
    """Each real inventory's kind is what its SOURCE.txt says (yaml or ini)."""
    assert kind_of(case / source_field(case, "inventory")) == source_field(case, "format")


def test_kind_of_mlfleets_own_yaml_fixtures():
    for path in (ALL_FIXTURES / "inventories").iterdir():
        assert kind_of(path) == "yaml", path


def test_kind_of_fixture_sources():
    assert kind_of(FIXTURES / "directory") == "directory"
    assert kind_of(FIXTURES / "script" / "fleet.sh") == "script"
    assert kind_of(FIXTURES / "plugin" / "fleet.generator.yml") == "plugin"
    assert kind_of(FIXTURES / "broken" / "cloud.nothing.yml") == "plugin"
    assert kind_of(FIXTURES / "vault-unsafe" / "inventory.yml") == "yaml"
    assert kind_of(FIXTURES / "order" / "walk.ini") == "ini"


@pytest.mark.parametrize(
    "text",
    [
        "[web]\nweb1\n",
        "[web:vars]\nx=1\n",
        "[web:children]\ngpu\n",
        "[web servers]\nweb1\n",  # no INI section (a space), but no YAML inventory either
        "# comment\n; another\n\n[all]\n#host1\n",
        "web1 ansible_host=10.0.0.1 ansible_port=2222\n",
        "web1\n",
        "web1:2222 ansible_user=deploy\n",
        "10.0.0.1:22\n",
        "web[01:20].example.com\n",
        "web1 ansible_ssh_common_args='-o ProxyCommand: x'\n",
        "\ufeff[web]\nweb1\n",
        "  [indented]\n",
        "[test]\n\nlocalhost",  # no newline at the end
    ],
)
def test_kind_of_ini_text(tmp_path: Path, text: str):
    assert kind_of(write(tmp_path / "hosts", text)) == "ini"


@pytest.mark.parametrize(
    "text",
    [
        "all:\n  hosts:\n    web1:\n",
        "---\nall:\n",
        "# fleet\n\nall:\n",
        '"my group":\n  hosts: {}\n',
        "'all': {}\n",
        '{"all": {"hosts": {"web1": null}}}\n',
        "all: {hosts: {web1: }}\n",
        "%YAML 1.2\n---\nall:\n",
        "- web1\n",
        "? all\n: {}\n",
        "",
        "# only a comment\n",
        "plugin: aws_ec2\n",  # no .yml: Ansible's auto plugin does not look
    ],
)
def test_kind_of_yaml_text(tmp_path: Path, text: str):
    assert kind_of(write(tmp_path / "hosts", text)) == "yaml"


def test_kind_of_ini_whatever_the_extension(tmp_path: Path):
    """Ansible reads any file that is no YAML mapping as INI, `.yml` included."""
    for name in ("hosts.ini", "hosts.yml", "hosts.example", "hosts.cfg"):
        assert kind_of(write(tmp_path / name, "[web]\nweb1\n")) == "ini", name


@pytest.mark.parametrize(
    "name, text, kind",
    [
        ("cloud.aws_ec2.yml", "plugin: amazon.aws.aws_ec2\nregions: [us-east-1]\n", "plugin"),
        ("netbox.yaml", "---\n# NetBox\nplugin: netbox.netbox.nb_inventory\n", "plugin"),
        ("constructed.yml", "strict: true\nplugin: constructed\n", "plugin"),
        ("quoted.yml", '"plugin": constructed\n', "plugin"),
        ("crlf.yml", "plugin:\r\n", "plugin"),
        ("nested.yml", "all:\n  vars:\n    plugin: x\n", "yaml"),
        ("plural.yml", "plugins: x\nall:\n", "yaml"),
        ("fleet.toml", "[web.hosts]\nweb1 = {}\n", "toml"),
    ],
)
def test_kind_of_plugin_configs_and_toml(tmp_path: Path, name: str, text: str, kind: str):
    assert kind_of(write(tmp_path / name, text)) == kind


def test_kind_of_scripts(tmp_path: Path):
    assert kind_of(write(tmp_path / "inv.py", "#!/usr/bin/env python3\n", True)) == "script"
    assert kind_of(write(tmp_path / "inv", "\x7fELF\x02\x01", True)) == "script"
    # An executable bit on a text inventory (a FAT mount, a checkout): Ansible cannot run it
    # and reads it as YAML or INI.
    assert kind_of(write(tmp_path / "fleet.yml", "all:\n", True)) == "yaml"
    assert kind_of(write(tmp_path / "hosts", "[web]\nweb1\n", True)) == "ini"
    # A shebang without the executable bit is a comment to the INI reader.
    assert kind_of(write(tmp_path / "plain", "#!/bin/sh\n[web]\n")) == "ini"


def test_kind_of_what_cannot_be_read_is_left_to_the_yaml_reader(tmp_path: Path):
    assert kind_of(tmp_path / "missing.yml") == "yaml"
    assert kind_of(tmp_path) == "directory"


def test_kind_of_reads_only_the_head(tmp_path: Path):
    big = tmp_path / "big.yml"
    big.write_text("all:\n  hosts:\n" + "    h: {}\n" * 500_000 + "plugin: late\n")
    started = time.monotonic()
    assert kind_of(big) == "yaml"  # a `plugin:` beyond the first MiB is not looked for
    assert time.monotonic() - started < 1.0


# --- finding ansible-inventory --------------------------------------------------------------


def test_find_ansible_inventory_from_the_environment(tmp_path: Path):
    assert find_ansible_inventory({ANSIBLE_INVENTORY_ENV: "/opt/a/ansible-inventory"}) == (
        "/opt/a/ansible-inventory"
    )
    assert find_ansible_inventory({ANSIBLE_INVENTORY_ENV: "", "PATH": str(tmp_path)}) is None


def test_find_ansible_inventory_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "python"))
    assert find_ansible_inventory({"PATH": str(tmp_path)}) is None
    fake = write(tmp_path / "ansible-inventory", "#!/bin/sh\n", True)
    assert find_ansible_inventory({"PATH": str(tmp_path)}) == str(fake)


def test_find_ansible_inventory_beside_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "venv").mkdir()
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "python"))
    beside = write(tmp_path / "venv" / "ansible-inventory", "#!/bin/sh\n", True)
    assert find_ansible_inventory({"PATH": str(tmp_path / "nowhere")}) == str(beside)


# --- the command line and its environment (pure) ------------------------------------------


def test_command_lists_merged_variables_and_passes_vault_passwords():
    assert ansible_inventory_command("/bin/ai", Path("-odd/hosts")) == [
        "/bin/ai", "--inventory=-odd/hosts", "--list",
    ]  # fmt: skip
    assert ansible_inventory_command("ai", Path("h"), ["a.pass", "b.pass"], ["prod@p.pass"]) == [
        "ai", "--inventory=h", "--list", "--vault-id=prod@p.pass",
        "--vault-password-file=a.pass", "--vault-password-file=b.pass",
    ]  # fmt: skip


def test_environment_keeps_the_callers_and_refuses_unparsed_sources():
    env = ansible_environment(
        {"PATH": "/bin", "AWS_PROFILE": "edge", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "False"}
    )
    assert env["PATH"] == "/bin" and env["AWS_PROFILE"] == "edge"
    assert env["ANSIBLE_INVENTORY_UNPARSED_FAILED"] == "True"
    assert env["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] == "True"
    assert env["ANSIBLE_NOCOLOR"] == "True"
    assert set(ANSIBLE_SETTINGS) <= set(env)


# --- --list JSON -> Inventory (pure, recorded outputs) --------------------------------------


def expected_members(doc: Dict[str, Any]) -> Dict[str, Set[str]]:
    """A plain reading of --list: each group's hosts, through children (the reference)."""
    groups = {name: body for name, body in doc.items() if name != "_meta"}

    def members(name: str) -> Set[str]:
        body = groups.get(name, {})
        found = set(body.get("hosts", []))
        for child in body.get("children", []):
            found |= members(child)
        return found

    names = set(groups) | {c for body in groups.values() for c in body.get("children", [])}
    result = {name: members(name) for name in names}
    result["all"] = set().union(*result.values()) if result else set()
    result.setdefault("ungrouped", set())
    return result


def assert_matches_list(inv: Inventory, doc: Dict[str, Any]) -> None:
    """The Inventory holds --list's hosts, groups (members through children) and vars."""
    members = expected_members(doc)
    assert set(inv.hosts) == members["all"]
    assert {g: set(m) for g, m in inv.groups.items()} == members
    for name, host in inv.hosts.items():
        assert set(host.groups) == {g for g, m in members.items() if name in m}
        assert host.groups[0] == "all"
        given = doc["_meta"]["hostvars"].get(name, {})
        assert set(host.vars) == set(given)
        for var, value in given.items():
            if isinstance(value, dict) and set(value) == {"__ansible_vault"}:
                assert isinstance(host.vars[var], VaultValue)
                assert host.vars[var].envelope == value["__ansible_vault"]
            elif isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
                assert isinstance(host.vars[var], UnsafeText)
                assert host.vars[var] == value["__ansible_unsafe"]
            else:
                assert host.vars[var] == value


RECORDINGS = [
    "kubespray-ini", "openshift-ini", "var_blending-ini", "deepops-config-ini",
    "group-priority-ini", "vault-unsafe", "directory", "order", "script", "plugin",
]  # fmt: skip


@pytest.mark.parametrize("name", RECORDINGS)
def test_recorded_list_output_becomes_the_same_inventory(name: str):
    assert_matches_list(from_recording(name), recorded(name))


def test_kubespray_ini():
    inv = from_recording("kubespray-ini", "inventory/staging-ny2/inventory.ini")
    assert inv.source == "inventory/staging-ny2/inventory.ini"
    # Ansible's own order is cpu1, cpu2, bastion (the `[all]` section first); --list does
    # not print `all`'s own hosts, so they come where their other groups put them.
    assert list(inv.hosts) == ["bastion", "cpu1", "cpu2"]
    cpu1 = inv.hosts["cpu1"]
    assert cpu1.groups == ("all", "etcd", "k8s_cluster", "kube_control_plane")
    assert len(cpu1.vars) == 152
    assert cpu1.vars["ansible_host"] == "10.7.208.11" and cpu1.vars["ip"] == "10.10.0.1"
    assert cpu1.address == "10.7.208.11" and cpu1.where == "inventory/staging-ny2/inventory.ini"
    assert cpu1.origins == {}
    assert inv.groups["k8s_cluster"] == ["cpu1", "cpu2"]
    assert inv.groups["bastion"] == ["bastion"]  # a group and a host of the same name
    assert inv.groups["ungrouped"] == []
    assert [h.name for h in inv.select("kube_node")] == ["cpu2"]
    assert [h.name for h in inv.select("all:!etcd")] == ["bastion", "cpu2"]
    assert [h.name for h in inv.select("k8s_cluster[1]")] == ["cpu2"]


def test_openshift_ini_ranges_and_all_vars():
    inv = from_recording("openshift-ini")
    assert list(inv.hosts) == [f"mycluster-worker-{i}.example.com" for i in range(1, 7)]
    assert inv.groups["new_workers"] == [f"mycluster-worker-{i}.example.com" for i in (4, 5, 6)]
    worker = inv.hosts["mycluster-worker-1.example.com"]
    assert worker.vars == {"ansible_user": "root", "openshift_kubeconfig_path": "~/.kube/config"}
    assert worker.groups == ("all", "workers")
    assert worker.user == "root"


def test_var_blending_ini_three_levels():
    inv = from_recording("var_blending-ini")
    host = inv.hosts["testhost"]
    assert host.groups == ("all", "arbitrary_grandparent", "arbitrary_parent", "local")
    assert host.vars["groups_tree_var"] == 5000 and host.vars["overridden_in_parent"] == 1000
    assert host.vars["ansible_python_interpreter"] == "{{ ansible_playbook_python }}"
    assert inv.hosts["testhost2"].vars["a"] == 999


def test_empty_groups_are_kept():
    """--list leaves out groups without hosts or children, except as a parent's child."""
    inv = from_recording("deepops-config-ini")
    assert inv.hosts == {}
    assert set(inv.groups) >= {
        "all", "ungrouped", "etcd", "k8s_cluster", "kube_control_plane", "kube_node",
        "slurm-cluster", "slurm-master", "slurm-node", "slurm-nfs", "slurm-login",
    }  # fmt: skip
    assert all(members == [] for members in inv.groups.values())
    assert next(iter(inv.groups)) == "all"


def test_groups_by_depth_then_name():
    """ansible_group_priority is not in --list: a host's groups go by depth, then name."""
    inv = from_recording("group-priority-ini")
    assert inv.hosts["host1"].groups == (
        "all", "top_group", "override", "product", "cluster", "product1",
    )  # fmt: skip
    assert inv.hosts["host1"].vars == {"ansible_connection": "local", "test": "cluster"}


def test_host_order_is_ansibles_walk():
    """As `ansible -i order/walk.ini all --list-hosts` prints them (ansible-core 2.19): a
    group's own hosts, then its children's, level by level."""
    inv = from_recording("order")
    assert list(inv.hosts) == ["h0", "h4", "h2", "h3", "h1"]
    assert inv.hosts["h3"].groups == ("all", "d", "c", "a", "b")
    assert inv.groups["c"] == ["h2", "h3", "h1"]
    assert inv.groups["b"] == ["h3", "h1"]
    assert list(inv.groups)[:5] == ["all", "ungrouped", "d", "c", "a"]
    # `group[0]` subscripts count in the same order
    assert inv.ordered_members("all") == list(inv.hosts)
    assert inv.ordered_members("c") == ["h2", "h3", "h1"]
    assert [h.name for h in inv.select("c[0]")] == ["h2"]
    assert [h.name for h in inv.select("c[-1]")] == ["h1"]


def test_vault_values_stay_encrypted_and_unsafe_values_are_never_templates():
    doc = recorded("vault-unsafe")
    inv = inventory_from_ansible_json(doc, "vault-unsafe/inventory.yml")
    host = inv.hosts["h1"]
    assert host.groups == ("all", "ungrouped")
    secret = host.vars["secret_var"]
    assert isinstance(secret, VaultValue)
    assert secret.envelope == doc["_meta"]["hostvars"]["h1"]["secret_var"]["__ansible_vault"]
    assert secret.envelope.startswith("$ANSIBLE_VAULT;1.1;AES256\n")
    assert secret.where == "vault-unsafe/inventory.yml"
    assert "ANSIBLE_VAULT" not in repr(host.vars)
    assert host.vars["unsafe_v"] == "{{ not_templated }}"
    assert isinstance(host.vars["unsafe_v"], UnsafeText)
    assert not is_template(host.vars["unsafe_v"])
    assert host.vars["plain"] == 1


def test_vault_and_unsafe_inside_lists_and_mappings():
    envelope = "$ANSIBLE_VAULT;1.1;AES256\n00"
    nested = {"a": [{"__ansible_vault": envelope}, {"__ansible_unsafe": "{{ x }}"}]}
    doc = {
        "_meta": {"hostvars": {"h": {"v": nested}}},
        "all": {"children": ["ungrouped"]},
        "ungrouped": {"hosts": ["h"]},
    }
    value = inventory_from_ansible_json(doc, "s").hosts["h"].vars["v"]
    assert isinstance(value["a"][0], VaultValue) and value["a"][0].envelope == envelope
    assert value["a"][1] == "{{ x }}" and isinstance(value["a"][1], UnsafeText)


def test_directory_script_and_plugin_sources():
    inv = from_recording("directory")
    assert list(inv.hosts) == ["gpu1", "web1", "web2"]
    assert inv.hosts["web1"].groups == ("all", "gpu", "web")
    assert inv.hosts["web2"].port == 2222 and inv.hosts["web2"].transfer == "relay"
    assert inv.hosts["web1"].vars["from_group_vars"] == "web"
    script = from_recording("script")
    assert list(script.hosts) == ["edge1", "edge2"]
    assert script.hosts["edge1"].vars == {"ansible_host": "10.0.2.1", "mlfleet_transfer": "relay"}
    plugin = from_recording("plugin")
    assert list(plugin.hosts) == ["gpu-lab", "gpu-edge", "cpu-lab", "cpu-edge"]
    assert plugin.hosts["gpu-edge"].groups == ("all", "edge", "gpu")


def test_ungrouped_is_always_there():
    inv = inventory_from_ansible_json({"all": {"children": ["g"]}, "g": {"hosts": ["a"]}}, "s")
    assert list(inv.groups) == ["all", "ungrouped", "g"]
    assert inv.hosts["a"].vars == {} and inv.hosts["a"].groups == ("all", "g")
    assert inventory_from_ansible_json({"_meta": {"hostvars": {}}}, "s").groups == {
        "all": [],
        "ungrouped": [],
    }


@pytest.mark.parametrize(
    "doc, what",
    [
        ([], "a JSON list, not an object"),
        ({"g": []}, "group 'g' is not an object"),
        ({"g": {"hosts": "a"}}, "the hosts of group 'g' are not a list of names"),
        ({"g": {"children": [1]}}, "the children of group 'g' are not a list of names"),
        ({"_meta": {"hostvars": []}}, "`_meta.hostvars` is not an object of objects"),
        ({"_meta": {"hostvars": {"a": 1}}}, "`_meta.hostvars` is not an object of objects"),
        ({"a": {"children": ["b"]}, "b": {"children": ["a"]}}, "group 'a' is not under"),
    ],
)
def test_output_that_is_no_inventory_is_one_line(doc: Any, what: str):
    with pytest.raises(ConfigError) as caught:
        inventory_from_ansible_json(doc, "fleet.ini")
    assert what in caught.value.message
    assert caught.value.where == "fleet.ini"
    assert "\n" not in str(caught.value)


def test_host_limit(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(inventory, "MAX_HOSTS", 2)
    doc = {"all": {"children": ["g"]}, "g": {"hosts": ["a", "b", "c"]}}
    with pytest.raises(ConfigError, match="3 hosts; the limit is 2"):
        inventory_from_ansible_json(doc, "s")


def test_ten_thousand_hosts_in_well_under_a_second():
    hosts = [f"node{i:05d}" for i in range(10_000)]
    hostvars = {h: {"ansible_host": f"10.0.{i // 256}.{i % 256}"} for i, h in enumerate(hosts)}
    doc: Dict[str, Any] = {
        "_meta": {"hostvars": hostvars},
        "all": {"children": ["ungrouped", "fleet"]},
        "fleet": {"children": ["gpu", "cpu"]},
        "gpu": {"hosts": hosts[::2]},
        "cpu": {"hosts": hosts[1::2]},
    }
    text = json.dumps(doc)
    started = time.monotonic()
    inv = within(CAP_SECONDS, inventory_from_ansible_json, json.loads(text), "big.ini")
    assert time.monotonic() - started < 1.0
    assert len(inv.hosts) == 10_000 and len(inv.groups["fleet"]) == 10_000
    assert inv.hosts["node00001"].groups == ("all", "fleet", "cpu")


# --- Ansible's failures as one line (pure, recorded stderr) ---------------------------------


def test_ini_failure_names_the_file_and_ansibles_reason():
    path = FIXTURES / "broken" / "hosts.ini"
    error = ansible_failure(recorded_stderr("broken-ini"), 1, path, "ini")
    assert error.message == (
        "ansible-inventory cannot read it: Expected key=value host variable assignment, got: foo"
    )
    assert error.where == str(path)
    assert "--list` shows Ansible's whole message" in (error.hint or "")


def test_directory_failure_names_the_file_inside_and_its_line():
    path = FIXTURES / "broken-directory"
    error = ansible_failure(recorded_stderr("broken-directory"), 1, path, "directory")
    assert error.message == (
        "ansible-inventory cannot read it: YAML parsing failed: While parsing a flow sequence "
        "did not find expected ',' or ']'."
    )  # the yaml plugin's reason, not the ini plugin's attempt at a YAML file
    assert error.where == f"{path}/02-bad.yml:3"


def test_plugin_failure():
    path = FIXTURES / "broken" / "cloud.nothing.yml"
    error = ansible_failure(recorded_stderr("unknown-plugin"), 1, path, "plugin")
    assert error.message == (
        f"ansible-inventory cannot read it: inventory config '{path}' specifies unknown plugin "
        "'no_such_namespace.no_such_collection.nothing'"
    )
    assert error.where == str(path)


def test_vault_file_without_password():
    path = Path("vault-file/inventory.yml")
    error = ansible_failure(recorded_stderr("vault-file"), 1, path, "yaml")
    assert error.message == (
        "ansible-inventory cannot read it: Attempting to decrypt but no vault secrets found."
    )
    assert error.where == "vault-file/inventory.yml"
    assert "ANSIBLE_VAULT_PASSWORD_FILE" in (error.hint or "")


@pytest.mark.parametrize(
    "stderr, reason",
    [
        ("\x1b[0;31m[ERROR]: the inventory is on fire\x1b[0m\n", "the inventory is on fire"),
        ("ERROR! Completely failed to parse inventory source /x\n", "Completely failed"),
        (  # ansible-core up to 2.18
            "[WARNING]: \n * Failed to parse /x/h with yaml plugin: not a mapping\n"
            "[WARNING]: \n * Failed to parse /x/h with ini plugin: /x/h:2: Expected key=value\n"
            "ERROR! Completely failed to parse inventory source /x/h\n",
            "/x/h:2: Expected key=value",
        ),
        (
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'hosts'\n",
            "KeyError: 'hosts'",
        ),
        ("", "it exited with status 3"),
        ("[ERROR]: a bell \x07 rings\n", "a bell \\x07 rings"),
        (  # the file's own text quoted back: an unassigned code point
            "[ERROR]: Error parsing host definition ''\U00018d09': No closing quotation\n",
            "Error parsing host definition ''\\u18d09': No closing quotation",
        ),
    ],
)
def test_failure_is_one_line_whatever_ansible_printed(stderr: str, reason: str):
    error = ansible_failure(stderr, 3, Path("/x/h"), "ini")
    assert reason in error.message and str(error).isprintable()
    assert error.message.startswith("ansible-inventory cannot read it: ")
    assert "\n" not in str(error) and "\x1b" not in str(error)
    assert "Traceback" not in str(error)


# --- not installed ------------------------------------------------------------------------


def test_ini_without_ansible_is_one_line_saying_how_to_proceed():
    path = FIXTURES / "openshift-ansible-hosts-example-ini" / "hosts.example"
    binary = find_ansible_inventory({ANSIBLE_INVENTORY_ENV: ""})
    with pytest.raises(ConfigError) as caught:
        load_with_ansible(path, kind_of(path), binary=binary)
    error = caught.value
    assert error.where == str(path)
    assert error.message == (
        "an INI inventory, which mlfleet reads through Ansible's ansible-inventory (not found)"
    )
    assert error.hint == (
        "install the extra: pip install 'mlfleet[ansible]', or convert it once: "
        f"ansible-inventory -i {path} --list --yaml > inventory.yml"
    )


@pytest.mark.parametrize(
    "kind, what, hint",
    [
        ("directory", "a directory of inventory sources", "point -i at one YAML inventory file"),
        ("plugin", "an inventory plugin configuration", "the plugin's collection"),
        ("script", "an executable inventory script", "convert it once"),
        ("toml", "a TOML inventory", "convert it once"),
    ],
)
def test_other_kinds_without_ansible(kind: str, what: str, hint: str):
    with pytest.raises(ConfigError) as caught:
        load_with_ansible(Path("fleet src"), kind, binary=None)
    assert caught.value.message.startswith(what)
    assert "pip install 'mlfleet[ansible]'" in (caught.value.hint or "")
    assert hint in (caught.value.hint or "")
    if kind in ("script", "toml"):
        assert "-i 'fleet src' --list --yaml" in (caught.value.hint or "")


# --- the process boundary (fake ansible-inventory scripts) ----------------------------------


def fake(tmp_path: Path, body: str) -> str:
    """A fake ansible-inventory: records its argv and environment, then runs `body`."""
    script = tmp_path / "ansible-inventory"
    write(
        script,
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\nenv > "{tmp_path}/env"\n' + body,
        executable=True,
    )
    return str(script)


def test_runs_ansible_inventory_and_reads_its_json(tmp_path: Path):
    binary = fake(tmp_path, f'cat "{RECORDED}/openshift-ini.list.json"\n')
    inv = load_with_ansible(
        Path("hosts.example"), "ini", binary=binary, vault_password_files=["v.pass"],
        environ={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "AWS_PROFILE": "edge"},
    )  # fmt: skip
    assert inv.source == "hosts.example" and len(inv.hosts) == 6
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == ["--inventory=hosts.example", "--list", "--vault-password-file=v.pass"]
    lines = (tmp_path / "env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["AWS_PROFILE"] == "edge"
    assert env["ANSIBLE_INVENTORY_UNPARSED_FAILED"] == "True"


def test_stdin_is_closed(tmp_path: Path):
    """A plugin that prompts (a vault password, a cloud's login) reads end-of-file at once
    instead of waiting for a terminal."""
    binary = fake(tmp_path, 'read line && echo "got $line" >&2 && exit 1\necho "{}"\n')
    result = within(
        CAP_SECONDS, lambda: load_with_ansible(Path("h"), "ini", binary=binary, timeout=5)
    )
    assert list(result.groups) == ["all", "ungrouped"]


def test_failing_ansible_inventory(tmp_path: Path):
    binary = fake(
        tmp_path,
        "echo '[WARNING]: something minor' >&2\n"
        "echo '[ERROR]: Unable to load the cloud: credentials expired' >&2\n"
        "echo 'Traceback (most recent call last):' >&2\nexit 1\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_with_ansible(Path("cloud.aws_ec2.yml"), "plugin", binary=binary)
    assert str(caught.value).startswith(
        "cloud.aws_ec2.yml: ansible-inventory cannot read it: Unable to load the cloud: "
        "credentials expired ("
    )


def test_output_that_is_no_json(tmp_path: Path):
    binary = fake(tmp_path, "echo 'all:'\n")
    with pytest.raises(ConfigError, match="ansible-inventory printed no JSON inventory"):
        load_with_ansible(Path("h"), "ini", binary=binary)


def test_binary_that_cannot_run(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        load_with_ansible(Path("h"), "ini", binary=str(tmp_path / "missing"))
    assert caught.value.message.startswith(f"cannot run {tmp_path}/missing: ")
    assert ANSIBLE_INVENTORY_ENV in (caught.value.hint or "")


def test_timeout_kills_ansible_inventory_and_its_children(tmp_path: Path):
    binary = fake(tmp_path, f'sleep 60 &\necho $! > "{tmp_path}/child"\nwait\n')
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"did not finish within 0\.5 s"):
        load_with_ansible(Path("h"), "plugin", binary=binary, timeout=0.5)
    assert time.monotonic() - started < 5
    child = int((tmp_path / "child").read_text())
    for _ in range(50):  # reaped by init once killed
        if not Path(f"/proc/{child}").exists() or "Z" in _state(child):
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "Z" in _state(child)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


# --- live: the real ansible-inventory, where installed --------------------------------------

LIVE = find_ansible_inventory(os.environ)
live = pytest.mark.skipif(
    LIVE is None,
    reason=f"no ansible-inventory (install ansible-core, or set {ANSIBLE_INVENTORY_ENV})",
)


def live_list(path: Path, *extra: str) -> Dict[str, Any]:
    """What the real ansible-inventory prints for `path`, run as a user would."""
    assert LIVE is not None
    import subprocess

    out = subprocess.run(
        [LIVE, "-i", str(path), "--list", *extra],
        capture_output=True, check=True, timeout=120,
        env=ansible_environment(os.environ), stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    return json.loads(out)


LIVE_SOURCES = [
    ("kubespray-ini", "kubespray-paperspace-staging-ini/inventory.ini", "ini"),
    ("openshift-ini", "openshift-ansible-hosts-example-ini/hosts.example", "ini"),
    ("var_blending-ini", "ansible-var_blending-ini/inventory", "ini"),
    ("directory", "directory", "directory"),
    ("script", "script/fleet.sh", "script"),
    ("plugin", "plugin/fleet.generator.yml", "plugin"),
]
# Compared with a --list of their own too (the rest: with their recording, which the
# `record` script made the same way); each ansible-inventory run costs about a second.
LISTED_AGAIN = ("kubespray-ini", "openshift-ini")


@live
@pytest.mark.parametrize("name, source, kind", LIVE_SOURCES, ids=[s[0] for s in LIVE_SOURCES])
def test_live_reads_what_ansible_inventory_lists(name: str, source: str, kind: str):
    path = FIXTURES / source
    assert kind_of(path) == kind
    inv = load_with_ansible(path, kind, binary=LIVE)
    if name in LISTED_AGAIN:
        assert_matches_list(inv, live_list(path))
    assert_matches_list(inv, recorded(name))
    assert inv.to_dict() == inventory_from_ansible_json(recorded(name), str(path)).to_dict(), (
        f"this ansible-inventory lists {source} otherwise than the recording: run "
        "tests/fixtures/ansible-source/record"
    )


@live
def test_live_ini_failure_is_one_line():
    path = FIXTURES / "broken" / "hosts.ini"
    with pytest.raises(ConfigError) as caught:
        load_with_ansible(path, "ini", binary=LIVE)
    assert caught.value.where == str(path)
    assert caught.value.message == (
        "ansible-inventory cannot read it: Expected key=value host variable assignment, got: foo"
    )


@live
def test_live_vault_file_needs_its_password(monkeypatch: pytest.MonkeyPatch):
    path = FIXTURES / "vault-file" / "inventory.yml"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_VAULT")}
    with pytest.raises(ConfigError, match="no vault secrets found") as caught:
        load_with_ansible(path, "yaml", binary=LIVE, environ=environ)
    assert "ANSIBLE_VAULT_PASSWORD_FILE" in (caught.value.hint or "")
    password = str(FIXTURES / "vault-file" / "password")
    inv = load_with_ansible(
        path, "yaml", binary=LIVE, environ=environ, vault_password_files=[password]
    )
    # A wholly encrypted vars file arrives decrypted: ansible-inventory prints it so.
    decrypted = {"db_password": "not-a-real-secret", "port_of_db": 5432}
    assert inv.hosts["h1"].vars == {"plain": 1, **decrypted}


@live
def test_live_inline_vault_stays_encrypted_even_with_a_password():
    path = FIXTURES / "vault-unsafe" / "inventory.yml"
    password = str(FIXTURES / "vault-file" / "password")  # not this value's: never needed
    inv = load_with_ansible(path, "yaml", binary=LIVE, vault_password_files=[password])
    assert isinstance(inv.hosts["h1"].vars["secret_var"], VaultValue)
    assert isinstance(inv.hosts["h1"].vars["unsafe_v"], UnsafeText)


def test_module_names_its_kinds():
    assert ansible_source.KINDS == ("yaml", "ini", "directory", "plugin", "script", "toml")
