"""`mlfleet check`: the inventory and the playbook validated as a deployment would read them
(and the `--limit` pattern, and every selected host's desired state for `--tag`) without
touching any host or the controller's state, like `ansible-playbook --syntax-check`. The
first mistake is the ConfigError the command that meets it would raise (file:line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from mlfleet.controller.hostops import check_cron_values
from mlfleet.controller.inventory import load_inventory
from mlfleet.controller.playbook import load_playbook


@dataclass(frozen=True)
class CheckReport:
    """What was checked, for the summary line."""

    hosts: int  # selected (by --limit when given)
    groups: int  # the groups those hosts are in (`all` not counted)
    inventory_hosts: int
    limit: Optional[str]
    app: str
    variants: int
    tag: Optional[str]

    def summary(self) -> str:
        """`inventory: 4 hosts in 2 groups; playbook sentiment: 4 variants; OK`."""
        inventory = f"inventory: {_count(self.hosts, 'host')}"
        if self.limit is not None:
            inventory += f" (--limit {self.limit} of {self.inventory_hosts})"
        parts = [
            f"{inventory} in {_count(self.groups, 'group')}",
            f"playbook {self.app}: {_count(self.variants, 'variant')}",
        ]
        if self.tag is not None:
            parts.append(f"tag {self.tag}: rendered for {_count(self.hosts, 'host')}")
        return "; ".join([*parts, "OK"])


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def check_config(
    inventory_path: Path,
    playbook_path: Path,
    limit: Optional[str],
    tag: Optional[str],
    warn: Optional[Callable[[str], None]] = None,
) -> CheckReport:
    """Load and validate; raise the first ConfigError (file:line and what to do). A
    `--limit` term that matches nothing goes to `warn`, as Ansible warns."""
    inventory = load_inventory(inventory_path)
    hosts = inventory.select(limit, warn)
    inventory.touched(hosts)
    for host in hosts:
        check_cron_values(host)
    playbook = load_playbook(playbook_path)
    if tag is not None:
        for host in hosts:
            playbook.desired_state(host.vars, host.name, tag, "check")
    chosen = {h.name for h in hosts}
    # Every host is in `all`: not counted (`ungrouped` is, when it holds a chosen host).
    groups = sum(
        1 for name, members in inventory.groups.items() if name != "all" and chosen & set(members)
    )
    return CheckReport(
        hosts=len(hosts),
        groups=groups,
        inventory_hosts=len(inventory.hosts),
        limit=limit,
        app=playbook.app,
        variants=len(playbook.variants),
        tag=tag,
    )
