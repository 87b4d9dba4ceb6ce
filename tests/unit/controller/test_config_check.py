"""`mlfleet check`'s reading of the inventory and playbook (the command line's exit codes and
one-line errors are in test_cli.py): what it counts and what it renders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest

from mlfleet.controller.config_check import CheckReport, check_config
from mlfleet.controller.errors import ConfigError
from tests.paths import REPO

PLAYBOOK = REPO / "playbooks" / "sentiment.yml"
INVENTORY = """\
all:
  vars: {mlfleet_registry: "registry:5000", model_data_dir: /srv/m}
  hosts:
    loose: {ansible_host: 10.0.0.9}
  children:
    gpu:
      hosts:
        edge-t4: {ansible_host: 10.0.0.1}
    cpu:
      hosts:
        edge-cpu: {ansible_host: 10.0.0.2}
      children:
        arm: {hosts: {edge-pi: {ansible_host: 10.0.0.3}}}
"""


def _check(tmp_path: Path, limit: Optional[str] = None, tag: Optional[str] = None,
           inventory: str = INVENTORY) -> CheckReport:  # fmt: skip
    path = tmp_path / "hosts.yml"
    path.write_text(inventory)
    return check_config(path, PLAYBOOK, limit, tag)


def test_hosts_and_the_groups_they_are_in(tmp_path: Path) -> None:
    report = _check(tmp_path)
    assert (report.hosts, report.groups, report.variants) == (4, 4, 4)  # ungrouped, gpu, cpu, arm
    assert report.summary() == "inventory: 4 hosts in 4 groups; playbook sentiment: 4 variants; OK"
    limited = _check(tmp_path, limit="cpu", tag="v3")
    assert limited.summary() == (
        "inventory: 2 hosts (--limit cpu of 4) in 2 groups; playbook sentiment: 4 variants;"
        " tag v3: rendered for 2 hosts; OK"
    )


def test_the_tag_is_rendered_for_every_selected_host(tmp_path: Path) -> None:
    no_registry = INVENTORY.replace('mlfleet_registry: "registry:5000", ', "")
    _check(tmp_path, inventory=no_registry)  # without --tag, templates are not rendered
    with pytest.raises(ConfigError, match="mlfleet_registry"):
        _check(tmp_path, tag="v3", inventory=no_registry)
    with pytest.raises(ConfigError, match="is not a Docker tag"):
        _check(tmp_path, tag="v3;reboot")
