"""The ordinary Ansible-style inventory the lab writes for its hosts (pure rendering).

Every lab-specific setting is a documented `mlfleet_*` host variable, the same a real
fleet would set for an unusual host: the controller cannot tell a lab host from a real one.
"""

from __future__ import annotations

from typing import Any, Dict

import yaml

HEADER = """\
# Written by `mlfleet lab up` for lab {name!r} ({count} hosts, profiles: {profiles}).
# An ordinary mlfleet/Ansible inventory; rewritten by every `lab up`.
"""


def _group_of(profile: Dict[str, Any]) -> str:
    if profile.get("jetson"):
        return "jetson"
    vendors = {g["vendor"] for g in profile.get("gpus") or ()}
    if "nvidia" in vendors:
        return "nvidia"
    if "amd" in vendors:
        return "amd"
    if "intel" in vendors:
        return "intel"
    return "cpu"


def render_inventory(status: Dict[str, Any]) -> str:
    """YAML text for `lab status` data: hosts grouped by accelerator under `all`."""
    first = status["hosts"][0] if status["hosts"] else {}
    groups: Dict[str, Dict[str, Any]] = {}
    for host in status["hosts"]:
        hostvars: Dict[str, Any] = {
            "ansible_host": host["address"],
            "ansible_port": host["ssh_port"],
        }
        if host["docker_host"]:
            hostvars["mlfleet_docker_host"] = host["docker_host"]
        hostvars.update(
            mlfleet_root=host["root"],
            mlfleet_device_root=host["root"],
            mlfleet_agent_dir=host["agent_dir"],
            mlfleet_cron_dir=host["cron_dir"],
            model_data_dir=host["data_dir"],
        )
        group = groups.setdefault(_group_of(host["profile"]), {"hosts": {}})
        group["hosts"][host["name"]] = hostvars
    doc = {
        "all": {
            "vars": {
                "ansible_user": first.get("ssh_user", "root"),
                "ansible_ssh_private_key_file": first.get("ssh_key"),
                "mlfleet_known_hosts": first.get("known_hosts"),
                "mlfleet_registry": status["registry"]["address"],
                **_registry_vars(status["registry"]),
            },
            "children": groups,
        }
    }
    header = HEADER.format(
        name=status["name"], count=len(status["hosts"]), profiles=status["profiles"]
    )
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _registry_vars(registry: Dict[str, Any]) -> Dict[str, Any]:
    """How the controller reaches the lab's registry: a secure one with its CA and the
    Docker config `lab up` wrote (its login); an open one over plain HTTP (the hosts'
    engines list it as insecure)."""
    if not registry.get("https"):
        return {"mlfleet_registry_scheme": "http"}
    return {
        "mlfleet_registry_scheme": "https",
        "mlfleet_registry_ca": registry["ca"],
        "mlfleet_registry_auth_file": registry["docker_config"],
    }
