"""pyinfra inventory: the hosts of the Ansible-style YAML inventory named by
$MLFLEET_BENCH_INVENTORY (the lab's), with the same SSH key and strict host-key checking."""

from __future__ import annotations

import os
from pathlib import Path

from mlfleet.controller.inventory import load_inventory

_DATA = ("mlfleet_registry", "model_data_dir")

hosts = [
    (
        h.name,
        {
            "ssh_hostname": h.address,
            "ssh_port": h.port,
            "ssh_user": h.user,
            "ssh_key": h.ssh_key,
            "ssh_known_hosts_file": h.known_hosts,
            "ssh_strict_host_key_checking": "yes",
            **{k: h.vars[k] for k in _DATA if k in h.vars},
        },
    )
    for h in load_inventory(Path(os.environ["MLFLEET_BENCH_INVENTORY"])).select(None)
]
