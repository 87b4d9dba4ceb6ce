"""Ansible-style inventories: structure, variable precedence, typed settings, --limit, errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List, Optional

import pytest

from mlfleet.controller import inventory
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hosts import Host, JumpHost, parse_jump_host
from mlfleet.controller.inventory import (
    Inventory,
    load_inventory,
    load_selected_hosts,
    parse_inventory,
    split_host_pattern,
)
from mlfleet.controller.lab.inventory_file import render_inventory
from mlfleet.controller.yamlsource import load_yaml_text
from tests.paths import FIXTURES as ALL_FIXTURES
from tests.paths import REPO
from tests.unit.controller.bounded import CAP_SECONDS, within

FIXTURES = ALL_FIXTURES / "inventories"
FLEET = FIXTURES / "fleet.yml"


def parse(text: str, source: str = "inv.yml") -> Inventory:
    return parse_inventory(load_yaml_text(text, source), source)


def names(hosts) -> List[str]:
    return [h.name for h in hosts]


def touched(inv: Inventory, pattern: Optional[str] = None) -> List[Host]:
    """The hosts a command would work on, checked as the command checks them."""
    hosts = inv.select(pattern)
    inv.touched(hosts)
    return hosts


@pytest.fixture(scope="module")
def fleet() -> Inventory:
    return load_inventory(FLEET)


# --- structure ---------------------------------------------------------------------------


def test_hosts_in_file_order_with_ranges_expanded(fleet: Inventory):
    assert list(fleet.hosts) == [
        "bastion-01",
        "edge01", "edge02", "edge03", "edge04",
        "node-a", "node-b", "node-c",
        "edge-cpu",
    ]  # fmt: skip
    assert fleet.source == str(FLEET)


def test_group_members_include_hosts_of_children(fleet: Inventory):
    assert fleet.groups["nvidia"] == ["edge01", "edge02", "edge03", "edge04"]
    assert fleet.groups["jetson"] == ["edge04", "node-a", "node-b", "node-c"]
    assert fleet.groups["gpu"] == ["edge01", "edge02", "edge03", "edge04", "node-a", "node-b", "node-c"]  # fmt: skip
    assert fleet.groups["all"] == list(fleet.hosts)
    assert fleet.groups["ungrouped"] == ["bastion-01"]  # listed only under `all`, as in Ansible


def test_host_groups_are_all_its_groups_in_the_order_their_vars_apply(fleet: Inventory):
    assert fleet.hosts["edge04"].groups == ("all", "gpu", "jetson", "nvidia")
    assert fleet.hosts["edge-cpu"].groups == ("all", "cpu")
    assert fleet.hosts["bastion-01"].groups == ("all", "ungrouped")


# --- variable precedence -----------------------------------------------------------------


def test_child_group_overrides_parent_which_overrides_all(fleet: Inventory):
    assert fleet.hosts["edge-cpu"].vars["tier"] == "base"  # all only
    assert fleet.hosts["node-a"].vars["tier"] == "gpu"  # gpu over all
    assert fleet.hosts["edge01"].vars["tier"] == "nvidia"  # nvidia (child) over gpu


def test_host_vars_override_group_vars(fleet: Inventory):
    assert fleet.hosts["edge04"].vars["tier"] == "edge04-own"


def test_sibling_groups_merge_in_name_order_and_a_host_listed_twice_gets_both(fleet: Inventory):
    edge04 = fleet.hosts["edge04"].vars
    assert edge04["accel"] == "nvidia"  # jetson and nvidia, same depth: later name wins
    assert edge04["ansible_become"] == "yes"  # from jetson
    assert edge04["mlfleet_bwlimit_kbit"] == 20000  # from its listing under jetson
    assert edge04["ansible_host"] == "10.0.0.14"  # from its listing under nvidia


def test_origins_name_the_line_of_the_winning_value(fleet: Inventory):
    origins = fleet.hosts["edge04"].origins
    assert origins["tier"] == f"{FLEET}:25"
    assert origins["accel"] == f"{FLEET}:19"
    assert origins["ansible_user"] == f"{FLEET}:4"
    assert fleet.hosts["node-b"].origins["tier"] == f"{FLEET}:13"


PRIORITY = """\
all:
  children:
    alpha:
      vars: {color: alpha, ansible_group_priority: 5}
      hosts: {h1: null}
    beta:
      vars: {color: beta}
      hosts: {h1: null}
"""


def test_group_priority_beats_name_order_and_is_not_a_variable():
    host = parse(PRIORITY).hosts["h1"]
    assert host.vars["color"] == "alpha"
    assert "ansible_group_priority" not in host.vars
    assert host.groups == ("all", "beta", "alpha")
    assert parse(PRIORITY.replace("5}", "0}")).hosts["h1"].vars["color"] == "beta"


def test_depth_beats_priority():
    inv = parse(
        "all:\n"
        "  children:\n"
        "    parent:\n"
        "      vars: {color: parent, ansible_group_priority: 99}\n"
        "      children:\n"
        "        child:\n"
        "          vars: {color: child}\n"
        "          hosts: {h1: null}\n"
    )  # fmt: skip
    assert inv.hosts["h1"].vars["color"] == "child"


def test_depth_is_the_longest_chain_from_all():
    # `deep` is both a top-level group (depth 1) and a grandchild (depth 3): depth 3 counts,
    # so it overrides `mid` (depth 2) although `deep` < `mid` by name.
    inv = parse(
        "all:\n"
        "  children:\n"
        "    top:\n"
        "      children:\n"
        "        mid:\n"
        "          vars: {color: mid}\n"
        "          children: {deep: null}\n"
        "deep:\n"
        "  vars: {color: deep}\n"
        "  hosts: {h1: null}\n"
    )  # fmt: skip
    assert inv.hosts["h1"].groups == ("all", "top", "mid", "deep")
    assert inv.hosts["h1"].vars["color"] == "deep"


def test_later_listing_of_a_host_wins_and_top_level_groups_join_all():
    inv = parse(
        "web:\n"
        "  hosts:\n"
        "    w1: {port_hint: first, keep: yes}\n"
        "db:\n"
        "  hosts:\n"
        "    w1: {port_hint: second}\n"
    )  # fmt: skip
    w1 = inv.hosts["w1"]
    assert (w1.vars["port_hint"], w1.vars["keep"]) == ("second", True)
    assert w1.origins["port_hint"] == "inv.yml:6"
    assert w1.groups == ("all", "db", "web")


def test_group_and_host_vars_files_beside_the_inventory(tmp_path: Path):
    (tmp_path / "hosts.yml").write_text(
        "all:\n"
        "  vars: {color: inline-all, size: inline-all}\n"
        "  children:\n"
        "    web:\n"
        "      vars: {color: inline-web, owner: inline-web}\n"
        "      hosts:\n"
        "        web1.example.com: {owner: inline-host}\n"
    )  # fmt: skip
    (tmp_path / "group_vars" / "web").mkdir(parents=True)
    (tmp_path / "group_vars" / "all.yml").write_text("size: file-all\ncolor: file-all\n")
    (tmp_path / "group_vars" / "web" / "10-base.yml").write_text("owner: file-web\n")
    (tmp_path / "group_vars" / "web" / "20-more.yaml").write_text("extra: file-web-20\n")
    (tmp_path / "group_vars" / "README.md").write_text("not yaml: [\n")  # not a group: unread
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "web1.example.com").write_text("ansible_port: 2200\n")
    host = load_inventory(tmp_path / "hosts.yml").hosts["web1.example.com"]
    # inline all < inline web < group_vars/all < group_vars/web < inline host < host_vars
    # (Ansible's order, ansible/ansible#23258: group_vars/all beats a group's vars in the file)
    assert host.vars["size"] == "file-all"
    assert host.vars["color"] == "file-all"
    assert host.vars["owner"] == "inline-host"
    assert host.vars["extra"] == "file-web-20"
    assert host.port == 2200
    assert host.origins["ansible_port"] == f"{tmp_path / 'host_vars' / 'web1.example.com'}:1"
    assert host.origins["size"] == f"{tmp_path / 'group_vars' / 'all.yml'}:1"


# --- typed settings ----------------------------------------------------------------------


def test_typed_settings_and_their_defaults(fleet: Inventory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", "/home/op")
    edge04, cpu, bastion = fleet.hosts["edge04"], fleet.hosts["edge-cpu"], fleet.hosts["bastion-01"]
    assert (edge04.address, edge04.port, edge04.user) == ("10.0.0.14", 2222, "deploy")
    assert (edge04.become, edge04.python, edge04.bwlimit_kbit) == (
        True,
        "/usr/bin/python3.8",
        20000,
    )
    assert (edge04.transfer, cpu.transfer) == ("relay", "pull")
    assert cpu.port == 22  # written as the string "22", as Ansible allows
    assert fleet.hosts["edge01"].address == "edge01"  # no ansible_host: the name
    assert bastion.registry == "registry.internal:5000"
    assert bastion.known_hosts == "/home/op/.ssh/known_hosts"
    assert (bastion.ssh_key, bastion.jump_host, bastion.docker_host, bastion.cron_dir) == (
        None, None, None, None,
    )  # fmt: skip
    assert (bastion.agent_dir, bastion.root, bastion.device_root) == ("/var/lib/mlfleet", "/", "/")
    assert (bastion.become, bastion.python) == (False, "python3")


def test_older_ssh_spellings_and_auto_interpreter():
    host = parse(
        "all:\n"
        "  hosts:\n"
        "    h1:\n"
        "      ansible_ssh_host: 10.1.1.1\n"
        "      ansible_ssh_port: 2022\n"
        "      ansible_ssh_user: ops\n"
        "      ansible_private_key_file: ~/.ssh/fleet\n"
        "      ansible_python_interpreter: auto_silent\n"
    ).hosts["h1"]  # fmt: skip
    assert (host.address, host.port, host.user, host.python) == ("10.1.1.1", 2022, "ops", "python3")
    assert host.ssh_key is not None and host.ssh_key.endswith("/.ssh/fleet")
    assert not host.ssh_key.startswith("~")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ops@bastion:2200", JumpHost("ops", "bastion", 2200)),
        ("bastion", JumpHost(None, "bastion", 22)),
        ("ssh://ops@10.0.0.1", JumpHost("ops", "10.0.0.1", 22)),
        ("ops@[2001:db8::1]:2222", JumpHost("ops", "2001:db8::1", 2222)),
        ("2001:db8::1", JumpHost(None, "2001:db8::1", 22)),
    ],
)
def test_jump_host_forms(value: str, expected: JumpHost):
    assert parse_jump_host(value) == expected


@pytest.mark.parametrize("value", ["a@b:0", "a@b:x", "@b", "a@b,c@d", "", "a b"])
def test_jump_host_refuses_bad_forms(value: str):
    with pytest.raises(ValueError):
        parse_jump_host(value)


def test_jump_host_from_variable_or_from_ansible_ssh_args():
    inv = parse(
        "all:\n"
        "  hosts:\n"
        "    a: {mlfleet_jump_host: 'ops@bastion:2200'}\n"
        "    b: {ansible_ssh_common_args: '-o StrictHostKeyChecking=no -o ProxyJump=j@gw:22'}\n"
        "    c: {ansible_ssh_common_args: '-J gw2'}\n"
        "    d: {ansible_ssh_extra_args: '-o \"ProxyJump none\"'}\n"
    )  # fmt: skip
    assert inv.hosts["a"].jump_host == JumpHost("ops", "bastion", 2200)
    assert inv.hosts["b"].jump_host == JumpHost("j", "gw", 22)
    assert inv.hosts["c"].jump_host == JumpHost(None, "gw2", 22)
    assert inv.hosts["d"].jump_host is None


@pytest.mark.parametrize(
    ("hostvars", "message", "line"),
    [
        ("ansible_port: 70000", "`ansible_port` must be a whole number from 1 to 65535", 5),
        ("ansible_port: abc", "`ansible_port` must be a whole number", 5),
        ("ansible_port: true", "`ansible_port` must be a whole number", 5),
        ("mlfleet_transfer: push", "`mlfleet_transfer` must be one of pull, relay, auto", 5),
        ("mlfleet_become: maybe", "`mlfleet_become` must be true or false", 5),
        ("mlfleet_registry_scheme: ftp", "`mlfleet_registry_scheme` must be https or http", 5),
        (
            "mlfleet_relay_registry: 'http://r:5000'",
            "must be upstream, cache or a registry's host:port",
            5,
        ),
        ("mlfleet_agent_dir: var/lib", "`mlfleet_agent_dir` must be an absolute path", 5),
        (
            "mlfleet_bwlimit_kbit: 0",
            "`mlfleet_bwlimit_kbit` must be a whole number from 1 to 100,000,000",
            5,
        ),
        ("mlfleet_docker_host: /run/docker.sock", "must be a DOCKER_HOST address", 5),
        ("ansible_user: ''", "`ansible_user` must be non-empty text", 5),
        (
            "mlfleet_registry: '{{ registry }}:5000'",
            "`mlfleet_registry` is a Jinja template mlfleet cannot evaluate: {{ registry }} uses "
            "registry, which is not defined",
            5,
        ),
        (
            "ansible_python_interpreter: '{{ ansible_playbook_python }}'",
            "{{ ansible_playbook_python }} uses ansible_playbook_python, which is not defined",
            5,
        ),
        (
            "ansible_user: \"{{ lookup('file', '/etc/user') }}\"",
            "lookup('file', ...) is not evaluated",
            5,
        ),
        ("mlfleet_jump_host: 'a@b:99999'", "`mlfleet_jump_host` must be a jump host", 5),
        ("ansible_ssh_common_args: '-o ProxyCommand=\"ssh -W %h:%p gw\"'", "ProxyCommand", 5),
    ],
)
def test_bad_settings_name_host_variable_and_line(hostvars: str, message: str, line: int):
    text = f"all:\n  hosts:\n    web1:\n      ansible_host: 10.0.0.1\n      {hostvars}\n"
    with pytest.raises(ConfigError) as err:
        touched(parse(text))
    assert err.value.where == f"inv.yml:{line}"
    assert "host 'web1'" in err.value.message
    assert message in err.value.message


def test_templates_of_other_variables_and_the_environment_are_evaluated():
    inv = parse(
        "all:\n"
        "  vars: {site: lyon, ansible_user: \"{{ lookup('env', 'MLFLEET_TEST_USER') }}\"}\n"
        "  hosts:\n"
        "    web1:\n"
        "      ansible_host: '{{ site }}-gw.example.com'\n"
        "      mlfleet_registry: \"{{ reg | default('r.example.com:5000') }}\"\n"
    )  # fmt: skip
    web1 = dataclasses.replace(inv.hosts["web1"], environ={"MLFLEET_TEST_USER": "deploy"})
    assert (web1.address, web1.user, web1.registry) == (
        "lyon-gw.example.com", "deploy", "r.example.com:5000",
    )  # fmt: skip
    assert web1.vars["ansible_host"] == "{{ site }}-gw.example.com"  # shown as written


def test_a_template_mlfleet_cannot_evaluate_stops_only_the_hosts_a_command_touches():
    inv = parse(
        "all:\n"
        "  hosts:\n"
        "    web1: {ansible_host: 10.0.0.1}\n"
        "    local: {ansible_python_interpreter: '{{ ansible_playbook_python }}'}\n"
    )  # fmt: skip
    assert names(touched(inv, "web1")) == ["web1"]
    assert names(inv.select(None)) == ["web1", "local"]  # `mlfleet inventory` lists both
    with pytest.raises(ConfigError) as err:
        touched(inv, "all")
    assert err.value.where == "inv.yml:4"
    assert err.value.message.startswith(
        "host 'local': `ansible_python_interpreter` is a Jinja template mlfleet cannot evaluate"
    )


def test_a_group_body_that_is_no_definition_is_skipped_with_a_warning_as_in_ansible():
    # Ansible's own example (ansible-examples-hosts-ex3): `webservers: gamma3` under
    # `children:` keeps webservers (defined above) as a child, and gamma3 nowhere.
    inv = parse(
        "webservers:\n  hosts: {g1: null}\n"
        "other:\n  children:\n    webservers:\n      gamma3\n"
        "broken: [a, b]\n"
    )  # fmt: skip
    assert inv.groups["other"] == ["g1"] and "gamma3" not in inv.hosts
    assert "broken" not in inv.groups
    warned: List[str] = []
    inv.select("all", warned.append)
    assert warned == [
        "inv.yml:5: skipping 'webservers': it is 'gamma3', not a group definition (a mapping "
        "with `hosts:`, `children:`, `vars:`), as Ansible skips it",
        "inv.yml:7: skipping 'broken': it is a list, not a group definition (a mapping with "
        "`hosts:`, `children:`, `vars:`), as Ansible skips it",
    ]


def test_a_host_name_with_spaces_is_listed_and_refused_only_as_an_address():
    # kubespray-pr6709: `hosts:` followed by names on lines of their own is one host.
    inv = parse("all:\n  hosts:\n    node1 node2:\n    node3: {ansible_host: 10.0.0.3}\n")
    assert list(inv.hosts) == ["node1 node2", "node3"]
    assert names(touched(inv, "node3")) == ["node3"]
    with pytest.raises(ConfigError, match="has no ansible_host, and its name cannot be an"):
        touched(inv, "all")


def test_a_bad_group_value_is_reported_where_the_group_sets_it():
    with pytest.raises(ConfigError) as err:
        touched(
            parse("all:\n  vars:\n    mlfleet_transfer: rsync\n  hosts: {h1: null, h2: null}\n")
        )
    assert err.value.where == "inv.yml:3"
    assert "host 'h1'" in err.value.message


# --- the lab's inventory -----------------------------------------------------------------


def lab_status(ssh_key=None, known_hosts=None) -> dict:
    def host(name, address, docker_host, gpus):
        return {
            "name": name, "address": address, "ssh_port": 22, "ssh_user": "root",
            "ssh_key": ssh_key, "known_hosts": known_hosts, "docker_host": docker_host,
            "root": f"/lab/{name}/root", "agent_dir": f"/lab/{name}/agent",
            "cron_dir": f"/lab/{name}/crontabs", "data_dir": f"/lab/{name}/data",
            "profile": {"gpus": gpus, "jetson": None},
        }  # fmt: skip

    return {
        "name": "lab",
        "profiles": "<built-in>",
        "registry": {"address": "10.77.0.1:5000"},
        "hosts": [
            host("edge-t4", "10.77.0.3", "unix:///run/t4.sock", [{"vendor": "nvidia"}]),
            host("edge-mi210", "10.77.0.5", "unix:///run/mi.sock", [{"vendor": "amd"}]),
            host("edge-cpu", "10.77.0.6", "unix:///run/cpu.sock", []),
            host("ssh1", "10.77.0.7", None, []),
        ],
    }


def test_the_labs_inventory_loads_with_every_setting():
    inv = parse(render_inventory(lab_status("/lab/ssh/id", "/lab/ssh/known_hosts")), "lab.yml")
    assert list(inv.hosts) == ["edge-t4", "edge-mi210", "edge-cpu", "ssh1"]
    assert inv.groups["nvidia"] == ["edge-t4"] and inv.groups["cpu"] == ["edge-cpu", "ssh1"]
    t4 = inv.hosts["edge-t4"]
    assert (t4.address, t4.port, t4.user) == ("10.77.0.3", 22, "root")
    assert (t4.ssh_key, t4.known_hosts) == ("/lab/ssh/id", "/lab/ssh/known_hosts")
    assert (t4.docker_host, t4.registry) == ("unix:///run/t4.sock", "10.77.0.1:5000")
    assert (t4.root, t4.device_root, t4.agent_dir, t4.cron_dir) == (
        "/lab/edge-t4/root", "/lab/edge-t4/root", "/lab/edge-t4/agent", "/lab/edge-t4/crontabs",
    )  # fmt: skip
    assert t4.vars["model_data_dir"] == "/lab/edge-t4/data"
    assert inv.hosts["ssh1"].docker_host is None
    assert inv.select("nvidia,amd") == [t4, inv.hosts["edge-mi210"]]


def test_the_labs_inventory_without_key_or_known_hosts_falls_back_to_defaults():
    host = parse(render_inventory(lab_status()), "lab.yml").hosts["edge-cpu"]
    assert host.ssh_key is None  # written as null
    assert host.known_hosts.endswith("/.ssh/known_hosts")


def test_the_example_inventory_loads():
    inv = load_inventory(REPO / "inventory" / "hosts.yml")
    assert len(inv.hosts) == 5 + 3 + 20
    assert inv.hosts["gpu05.dc1.example.com"].port == 2222
    orin = inv.hosts["orin-b.site7.example.com"]
    assert orin.jump_host is not None and orin.jump_host.address == "bastion.example.com"
    assert orin.become and orin.user == "deploy"
    assert inv.hosts["store007.example.com"].python == "/usr/bin/python3.8"


def test_to_dict_is_plain_json(fleet: Inventory):
    data = json.loads(json.dumps(fleet.to_dict()))
    assert data["hosts"]["edge04"]["groups"] == ["all", "gpu", "jetson", "nvidia"]
    assert data["hosts"]["edge04"]["vars"]["ansible_port"] == 2222
    assert data["groups"]["cpu"] == ["edge-cpu"]
    assert type(fleet.to_dict()["hosts"]["edge04"]["vars"]) is dict


# --- --limit -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, "bastion-01 edge01 edge02 edge03 edge04 node-a node-b node-c edge-cpu"),
        ("all", "bastion-01 edge01 edge02 edge03 edge04 node-a node-b node-c edge-cpu"),
        ("*", "bastion-01 edge01 edge02 edge03 edge04 node-a node-b node-c edge-cpu"),
        ("jetson", "edge04 node-a node-b node-c"),
        ("edge-cpu,edge01", "edge01 edge-cpu"),  # inventory order, not pattern order
        ("edge0*", "edge01 edge02 edge03 edge04"),
        ("edge0[13]", ""),  # Ansible: host 13 of a group `edge0`; there is none
        ("edge0[!4]", "edge01 edge02 edge03"),  # a glob
        ("edge[01:02]", ""),  # no host range in a limit: group `edge`'s hosts 1 to 2
        # Subscripts count in Ansible's order of a group's hosts: its own hosts as listed,
        # then its children's, level by level (each checked with ansible --list-hosts).
        ("jetson[0]", "node-a"),
        ("jetson[1:2]", "node-b node-c"),
        ("jetson[-1]", "edge04"),
        ("jetson[2:]", "edge04 node-c"),  # in inventory order, as every selection
        ("gpu[0:1],cpu", "edge01 edge02 edge-cpu"),
        ("all[1]", "edge-cpu"),  # all: bastion-01 (its own), then cpu's, then gpu's children's
        ("*.x", ""),
        ("gpu:!jetson", "edge01 edge02 edge03"),
        ("gpu,!jetson", "edge01 edge02 edge03"),
        ("!jetson", "bastion-01 edge01 edge02 edge03 edge-cpu"),  # only exclusions: from all
        ("nvidia:&jetson", "edge04"),
        ("&jetson,nvidia", "edge04"),  # & and ! apply after the plain terms
        ("gpu,&nvidia,!edge02", "edge01 edge03 edge04"),
        ("~node-[ab]", "node-a node-b"),
        ("ungrouped", "bastion-01"),
        ("g*", "edge01 edge02 edge03 edge04 node-a node-b node-c"),  # a glob on group names
        (" jetson , cpu ", "edge04 node-a node-b node-c edge-cpu"),
        ("nvidia:&cpu", ""),
    ],
)
def test_select(fleet: Inventory, pattern, expected: str):
    assert names(fleet.match(pattern).hosts) == expected.split()
    if expected:
        assert names(fleet.select(pattern)) == expected.split()
    else:
        with pytest.raises(ConfigError, match="selects no host"):
            fleet.select(pattern)


def test_a_term_matching_nothing_is_a_warning_as_in_ansible(fleet: Inventory):
    warnings: List[str] = []
    assert names(fleet.select("nvidia,jetsn", warnings.append)) == names(fleet.select("nvidia"))
    assert warnings == ["no host or group matches 'jetsn' in --limit; ignored"]
    with pytest.raises(ConfigError) as err:  # nothing at all selected: refused
        fleet.select("jetsn")
    assert err.value.message == "--limit 'jetsn' selects no host: no host or group matches 'jetsn'"
    assert "jetson" in (err.value.hint or "")


def test_an_exclusion_matching_nothing_is_refused(fleet: Inventory):
    # A typo after `!` would select the very host it meant to leave out.
    with pytest.raises(ConfigError) as err:
        fleet.select("all:!edge5")
    assert (
        err.value.message == "no host or group matches 'edge5' in the exclusion '!edge5' of --limit"
    )
    assert "edge01" in (err.value.hint or "")


def test_a_subscript_past_the_groups_end_is_refused(fleet: Inventory):
    with pytest.raises(ConfigError) as err:
        fleet.select("cpu[3]")
    assert (
        err.value.message
        == "no host matches the subscript of 'cpu[3]' in --limit: 'cpu' has 1 host"
    )


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("xyz*", "--limit 'xyz*' selects no host: no host or group matches 'xyz*'"),
        ("~(", "not a valid regular expression"),
        ("", "empty --limit"),
        ("gpu,!", "empty term"),
    ],
)
def test_select_errors(fleet: Inventory, pattern: str, message: str):
    with pytest.raises(ConfigError) as err:
        fleet.select(pattern)
    assert message in err.value.message


def test_an_empty_group_matches_without_a_warning_and_selects_no_host():
    inv = parse("all:\n  hosts: {h1: null}\n  children:\n    spare: null\n")
    assert inv.match("spare").hosts == [] and inv.match("spare").warnings == []
    with pytest.raises(ConfigError, match=r"^--limit 'spare' selects no host$"):
        inv.select("spare")


def test_split_host_pattern_like_ansible():
    assert split_host_pattern("a,b[1:2], c") == ["a", "b[1:2]", "c"]
    assert split_host_pattern("web:!db:&prod") == ["web", "!db", "&prod"]
    assert split_host_pattern("edge[01:03]:cpu") == ["edge[01:03]", "cpu"]
    assert split_host_pattern("2001:db8::1") == ["2001:db8::1"]


# --- host patterns -----------------------------------------------------------------------


def test_host_pattern_ports_and_ipv6_names():
    inv = parse(
        "all:\n"
        "  hosts:\n"
        "    web[1:2]:2222:\n"
        "    db.example.com:2200: {ansible_port: 2300}\n"
        "    2001:db8::5:\n"
        "    '[2001:db8::6]:2201':\n"
    )  # fmt: skip
    assert list(inv.hosts) == ["web1", "web2", "db.example.com", "2001:db8::5", "2001:db8::6"]
    assert inv.hosts["web2"].port == 2222
    assert inv.hosts["web2"].origins["ansible_port"] == "inv.yml:3"
    assert inv.hosts["db.example.com"].port == 2300  # an explicit variable wins
    assert inv.hosts["2001:db8::5"].port == 22
    assert inv.hosts["2001:db8::6"].port == 2201


def test_lone_names_for_hosts_and_children_are_accepted_as_ansible_does():
    inv = parse("all:\n  children:\n    web:\n      hosts: web1\n    app:\n      children: web\n")
    assert inv.groups["app"] == ["web1"]
    assert inv.hosts["web1"].groups == ("all", "app", "web")


def test_ansible_inventory_yaml_output_loads():
    # What `ansible-inventory --list --yaml` writes: an explicit, sometimes empty, ungrouped.
    inv = parse(
        "all:\n"
        "  children:\n"
        "    ungrouped:\n"
        "      hosts:\n"
        "        solo: {ansible_host: 10.0.0.9}\n"
        "    web:\n"
        "      hosts:\n"
        "        web1: {}\n"
    )  # fmt: skip
    assert inv.groups["ungrouped"] == ["solo"]
    assert inv.hosts["web1"].groups == ("all", "web")


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("", "inv.yml", "the inventory is empty"),
        ("- web1\n- web2\n", "inv.yml:1", "must be a mapping of group names"),
        ("hosts:\n  web1:\n", "inv.yml:2", "unknown key 'web1' in group 'hosts'"),
        ("all:\n  host:\n    web1:\n", "inv.yml:2", "unknown key 'host' in group 'all'"),
        ("all:\n  hosts:\n    - web1\n    - web2\n", "inv.yml:2", "`hosts` of group 'all' must be a mapping, not a list"),
        ("all:\n  hosts:\n    web1: 10.0.0.1\n", "inv.yml:3", "host 'web1': expected its variables as a mapping"),
        ("all:\n  vars: [a, b]\n", "inv.yml:2", "`vars` of group 'all' must be a mapping"),
        ("all:\n  children:\n    - web\n", "inv.yml:2", "`children` of group 'all' must be a mapping"),
        ("all:\n  children:\n    web: [a]\n", "inv.yml:3", "'web' under group 'all' is not a known group"),
        ("all:\n  children:\n    web servers:\n", "inv.yml:3", "group name 'web servers' is not valid"),
        ("all:\n  children:\n    all:\n", "inv.yml:3", "`all` cannot be a child group"),
        ("all:\n  hosts:\n    edge[3:1]:\n", "inv.yml:3", "range start 3 is after its end 1"),
        ("all:\n  hosts:\n    'web 1':\n", "inv.yml:3", "host 'web 1' has no ansible_host, and its name cannot be an address"),
        ("all:\n  hosts:\n    web1:22x:\n", "inv.yml:3", "port '22x' is not a number"),
        ("all:\n  hosts:\n    web1:\n      1: x\n", "inv.yml:4", "variable name 1 is not text"),
        ("all:\n  hosts:\n    web1:\n    web1:\n", "inv.yml:4", "duplicate key 'web1'"),
        ("all:\n  hosts: {web1: null}\n  hosts: {}\n", "inv.yml:3", "duplicate key 'hosts'"),
        ("all:\n  vars: {ansible_group_priority: high}\n", "inv.yml:2", "`ansible_group_priority` of group 'all' must be a whole number"),
        ("all:\n  hosts: [\n", "inv.yml:3", "not valid YAML"),
        (
            "all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a:\n",
            "inv.yml:7", "groups form a loop: a -> b -> a",
        ),
        ("web:\n  children:\n    web:\n", "inv.yml:3", "group 'web' lists itself as a child"),
    ],
)  # fmt: skip
def test_bad_input_names_file_and_line(text: str, where: str, message: str):
    with pytest.raises(ConfigError) as err:
        touched(parse(text))
    assert err.value.where == where
    assert message in err.value.message


def test_every_structural_error_has_a_hint():
    for text in ("all:\n  host:\n", "hosts:\n  a:\n", "all:\n  hosts: [a]\n", "- a\n"):
        with pytest.raises(ConfigError) as err:
            parse(text)
        assert err.value.hint


def test_missing_file_and_bad_vars_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_inventory(tmp_path / "nope.yml")
    (tmp_path / "hosts.yml").write_text("all:\n  hosts: {web1: null}\n")
    (tmp_path / "host_vars").mkdir()
    (tmp_path / "host_vars" / "web1.yml").write_text("- a list\n")
    with pytest.raises(ConfigError) as err:
        load_inventory(tmp_path / "hosts.yml")
    assert err.value.where == f"{tmp_path / 'host_vars' / 'web1.yml'}:1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("mlfleet_relay_registry: upstream", "upstream"), ("mlfleet_relay_registry: cache", "cache"),
     ("mlfleet_relay_registry: 'mirror.site.lan:5000'", "mirror.site.lan:5000")],
)  # fmt: skip
def test_relay_registry_forms(value: str, expected):
    inv = parse(f"all:\n  hosts:\n    web1:\n      ansible_host: 10.0.0.1\n      {value}\n")
    assert inv.hosts["web1"].relay_registry == expected


# --- hostile and huge input: one line naming file:line, answered at once ----------------


def refused(text: str, source: str = "inv.yml") -> ConfigError:
    """The one line a command gives for `text` (read, then every host touched)."""
    with pytest.raises(ConfigError) as info:
        within(CAP_SECONDS, lambda: touched(parse(text, source)))
    line = str(info.value)
    assert len(line.splitlines()) == 1 and line.isprintable(), line
    return info.value


def chain_of_groups(depth: int) -> str:
    """g0 lists g1 as a child, g1 lists g2, ... each group written at the top level."""
    groups = "".join(f"g{i}:\n  children:\n    g{i + 1}:\n" for i in range(depth))
    return groups + f"g{depth}:\n  hosts:\n    deep[1:2]:\n"


def test_a_huge_host_range_is_refused_before_it_is_expanded():
    err = refused("all:\n  hosts:\n    web1:\n    h[0:99999999]:\n")
    assert str(err) == (
        "inv.yml:4: host range 'h[0:99999999]' expands to 100,000,000 hosts; the limit is 100,000"
    )


def test_the_hosts_of_an_inventory_are_capped(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(inventory, "MAX_HOSTS", 10)
    assert len(parse("all:\n  hosts:\n    a[1:5]:\n    b[1:5]:\n").hosts) == 10
    err = refused("all:\n  hosts:\n    a[1:5]:\n    b[1:5]:\n    a3:\n    c1:\n")
    assert str(err) == (
        "inv.yml:6: the inventory names more than 10 hosts (the limit), reached at 'c1' "
        "(split the fleet into several inventories)"
    )


def test_listings_and_memberships_are_capped(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(inventory, "MAX_MEMBERSHIPS", 100)
    many = "".join(f"    g{i}:\n      hosts:\n        h[1:30]:\n" for i in range(4))
    err = refused("all:\n  children:\n" + many)
    assert err.where == "inv.yml:14" and err.message == (
        "groups list hosts more than 100 times (the limit), reached at 'h[1:30]' in group 'g3'"
    )
    # 30 hosts in 2 listed groups and `all`, 90 places: fine; nested one deeper, 120 are not
    assert len(parse("all:\n  children:\n" + many[: many.index("    g2")]).hosts) == 30
    nested = "all:\n  children:\n    top:\n      children:\n" + "".join(
        f"        g{i}:\n          hosts:\n            h[1:30]:\n" for i in range(2)
    )
    assert "hosts are in groups more than 100 times, counting each group's ancestors" in str(
        refused(nested)
    )


def test_a_2000_deep_chain_of_children_resolves_at_once():
    inv = within(CAP_SECONDS, parse, chain_of_groups(2000))
    assert inv.hosts["deep1"].groups[:3] == ("all", "g0", "g1")
    assert inv.hosts["deep2"].groups[-1] == "g2000" and len(inv.hosts["deep2"].groups) == 2002
    assert inv.groups["g0"] == ["deep1", "deep2"]


def test_a_2000_long_loop_of_children_is_one_short_line():
    loop = "".join(f"g{i}:\n  children:\n    g{(i + 1) % 2000}:\n" for i in range(2000))
    assert str(refused(loop)) == (
        "inv.yml:6000: groups form a loop: g0 -> g1 -> g2 -> ... -> g1998 -> g1999 -> g0 "
        "(2,000 groups) (a group cannot contain one of its ancestors)"
    )


def test_groups_nested_400_deep_in_yaml_are_refused_at_the_limit():
    text = "all:\n" + "".join(
        "  " * (2 * i + 1) + "children:\n" + "  " * (2 * i + 2) + f"g{i}:\n" for i in range(200)
    )
    err = refused(text)
    assert err.message == "nested more than 100 levels deep" and err.where == "inv.yml:101"


def test_a_billion_laughs_in_group_vars_is_refused_at_the_alias(tmp_path: Path):
    laughs = "".join(
        f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 10)
    )
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts: {web1: }\n  vars:\n    a0: &a0 [lol, lol]\n" + laughs)
    with pytest.raises(ConfigError) as info:
        within(CAP_SECONDS, load_inventory, path)
    assert str(info.value).startswith(f"{path}:10: aliases repeat more than 1,000,000 nodes")


def test_many_groups_sharing_their_hosts_resolve_in_linear_time():
    groups = "".join(f"    g{i}:\n      hosts:\n        h[1:20]:\n" for i in range(5000))
    inv = within(CAP_SECONDS, parse, "all:\n  children:\n" + groups)
    assert len(inv.hosts["h7"].groups) == 5001 and len(inv.groups["g4999"]) == 20


def test_entangled_children_links_are_capped(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(inventory, "MAX_RESOLVE_STEPS", 50)
    text = "".join(
        f"g{i}:\n  hosts: {{h{i}: }}\n  children: {{"
        + ", ".join(f"g{j}: " for j in range(i + 1, 12))
        + "}\n"
        for i in range(12)
    )
    err = refused(text)
    assert err.message.startswith(
        "the groups' `children:` links take more than 50 steps to resolve (the limit)"
    )


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("all:\n  children:\n    \"gpu\\n\":\n", "inv.yml:3", "group name 'gpu\\n' is not valid"),
        ("all:\n  hosts:\n    \"web\\x1b\":\n", "inv.yml:3", "host name 'web\\x1b' contains a control or other unprintable character"),
        ("all:\n  hosts:\n    \"web\\u2028x\":\n", "inv.yml:3", "host name 'web\\u2028x' contains a control or other unprintable character"),
        ("all:\n  hosts:\n    ? [a, b]\n    : 1\n", "inv.yml:3", "a key must be a name or a number, not a list"),
        ("all:\n  vars:\n    \"x\\ty\": 1\n", "inv.yml:3", "variable name 'x\\ty' contains a control"),
        ("all:\n  vars:\n    port: !!int 22x\n", "inv.yml:3", "'22x' is not a valid whole number (!!int)"),
        ("all:\n  hosts:\n    web1: {ansible_port: !!timestamp x}\n", "inv.yml:3", "'x' is not a valid date or time"),
        ("all:\n  hosts:\n    web1:\n  vars: {ansible_become: !!bool maybe}\n", "inv.yml:4", "'maybe' is not a valid boolean"),
        ("all:\n  hosts:\n    web1:\x07\n", "inv.yml:3", "the character \\x07 (#x0007) is not allowed"),
        ("all:\n  hosts:\n    web1:" + "9" * 30 + ":\n", "inv.yml:3", "port '99999999999"),
        ("all:\n  hosts:\n    web1: {ansible_port: '" + "9" * 5000 + "'}\n", "inv.yml:3", "`ansible_port` must be a whole number from 1 to 65535"),
        ("all:\n  vars:\n    mlfleet_registry_scheme: ftp\n  hosts: {w: }\n", "inv.yml:3", "`mlfleet_registry_scheme` must be https or http, not 'ftp'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_printable_line(text: str, where: str, message: str):
    err = refused(text)
    assert err.where == where and message in err.message


def test_a_vars_file_that_is_not_utf8_is_one_line(tmp_path: Path):
    (tmp_path / "hosts.yml").write_text("all:\n  hosts: {web1: }\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_bytes(b"color: \xff\n")
    with pytest.raises(ConfigError, match=r"all\.yml: not UTF-8 text \(byte 0xff at offset 7\)"):
        load_inventory(tmp_path / "hosts.yml")


def test_load_selected_hosts_reads_and_checks_without_touching_a_host(tmp_path: Path):
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    edge[1:3]: {ansible_host: 10.0.0.1}\n")
    hosts = load_selected_hosts(tmp_path / "hosts.yml", "all[1:2]")
    assert [h.name for h in hosts] == ["edge2", "edge3"]
    with pytest.raises(ConfigError, match="`ansible_port` must be a whole number"):
        (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    edge1: {ansible_port: x}\n")
        load_selected_hosts(tmp_path / "hosts.yml", "edge1")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("~(a+)+$", "'~(a+)+$' in --limit repeats a repetition (like `(a+)+`)"),
        ("~(x*y?)*", "repeats a repetition"),
        ("~" + "a" * 1001, "is longer than 1,000 characters"),
        ("edge[01:03", "unbalanced brackets in --limit 'edge[01:03'"),
        ("nvidia:\x1b[2J", "unbalanced brackets in --limit 'nvidia:\\x1b[2J'"),
        ("x" + ",x" * 10_000, "--limit has 10,001 terms; the limit is 10,000"),
        ("we\x07b", "no host or group matches 'we\\x07b'"),
    ],
)
def test_bad_limit_patterns_are_one_line(fleet: Inventory, pattern: str, message: str):
    with pytest.raises(ConfigError) as err:
        within(CAP_SECONDS, fleet.select, pattern)
    line = str(err.value)
    assert message in line and len(line.splitlines()) == 1 and line.isprintable()


def test_regexes_that_repeat_once_are_fine(fleet: Inventory):
    assert names(fleet.select("~edge-?(cpu|0[1-2])+")) == ["edge01", "edge02", "edge-cpu"]
    assert names(fleet.select("~node-[a-b]{1}$")) == ["node-a", "node-b"]


def test_a_vars_directory_is_read_in_sorted_order_once_even_through_a_symlink_loop(
    tmp_path: Path,
):
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts: {web1: }\n")
    web = tmp_path / "group_vars" / "web"
    (web / "20-dir").mkdir(parents=True)
    (web / "10-base.yml").write_text("a: from-10\nb: from-10\nc: from-10\n")
    (web / "20-dir" / "x.yml").write_text("b: from-20-dir\nc: from-20-dir\n")
    (web / "30-more.yml").write_text("c: from-30\n")
    (web / "20-dir" / "loop").symlink_to(web)
    host = within(CAP_SECONDS, load_inventory, tmp_path / "hosts.yml").hosts["web1"]
    assert (host.vars["a"], host.vars["b"], host.vars["c"]) == ("from-10", "from-20-dir", "from-30")
