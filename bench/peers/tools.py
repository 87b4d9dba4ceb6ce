"""The command lines of every tool the benchmark runs, and what each does and does not do.

Each function returns (argv, environment) for one run; nothing here runs anything."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

PEERS = Path(__file__).resolve().parent
REPO = PEERS.parent.parent
BIN = Path(sys.executable).parent
Command = Tuple[List[str], Dict[str, str]]


@dataclass(frozen=True)
class Tool:
    key: str
    label: str
    does: str
    does_not: str


UPDATE_TOOLS = (
    Tool("mlfleet", "mlfleet deploy (same job)",
         "agent install check, variant selection, preflight, pull, stop-first replace, /health "
         "(every 500ms) and an inference check, commit (old release kept), a record in the "
         "state DB; playbook copy with `monitor: 0s` and `health.docker: false`; "
         "--canary 0 --batch 100% --forks N",
         "no watch window after healthy (the shipped playbook's 10s); does not also wait for "
         "the image's own HEALTHCHECK"),
    Tool("mlfleet-image-hc", "mlfleet deploy (same job + image HEALTHCHECK)",
         "as the same job, but with the playbook's default `health.docker: true`: also waits "
         "for the image's own HEALTHCHECK (interval 2s, start period 5s in the lab image)",
         "no watch window"),
    Tool("mlfleet-shipped", "mlfleet deploy (as shipped)",
         "playbooks/sentiment.yml as it is: a canary of one host per variant, then batches of 50%, each host "
         "watched 10s after healthy before the next wave; default --forks 20",
         "nothing less than the same-job run; it is slower by design (safety)"),
    Tool("ansible", "Ansible playbook",
         "community.docker docker_image_pull + docker_container (same ports, mount, "
         "no-new-privileges, log limits, Docker HEALTHCHECK on /health every 500ms), "
         "`state: healthy` waits (polls every 1s, +10% a round); forks N, pipelining on, "
         "no fact gathering, fresh SSH ControlMaster per run",
         "no variant selection, no inference check, no watch window, no rollback (the old "
         "container is removed), no cron agent, no deployment record; needs `requests` "
         "in the hosts' Python"),
    Tool("pyinfra", "pyinfra deploy",
         "docker.image + docker.container(force=True) (docker CLI on the host, same spec "
         "and HEALTHCHECK), then a shell loop polling health every 0.2s; --parallel N",
         "no variant selection, no inference check, no watch window, no rollback, old "
         "container killed (rm -f), no cron agent, no record"),
    Tool("floor", "floor (ssh + docker CLI)",
         "one `ssh` per host, all at once: docker pull, docker rm -f, docker run (same spec "
         "and HEALTHCHECK), poll health every 0.2s",
         "nothing else: no checks, no records, no rollback, no variant selection"),
)  # fmt: skip

FACTS_TOOLS = (
    Tool("mlfleet-first", "mlfleet facts (first contact)",
         "copies the agent zipapp (~160 KB) by hash, installs its cron entry, checks it "
         "runs, then `detect`: GPUs, drivers, CUDA/ROCm/L4T, engine GPU wiring, CPU, OS, "
         "memory, disk; stored in the state DB; --forks N",
         "no general-purpose facts (packages, network interfaces, mounts)"),
    Tool("mlfleet", "mlfleet facts (agent present)",
         "the same, the agent already on the host: one round trip checks its hash and "
         "cron entry and runs `detect`", "as above"),
    Tool("ansible", "ansible -m setup",
         "Ansible's full fact gathering (gather_subset=all) on every host; -f N, pipelining, "
         "fresh SSH ControlMaster per run",
         "no GPU, driver or CUDA facts; nothing stored"),
    Tool("pyinfra", "pyinfra fact",
         "six facts: server.Hostname, server.Arch, server.KernelVersion, "
         "server.LinuxDistribution, hardware.Cpus, hardware.Memory; --parallel N",
         "no GPU, driver or CUDA facts; nothing stored; fewer facts than either"),
)  # fmt: skip


def same_job_playbook(workdir: Path, image_healthcheck: bool = False) -> Path:
    """playbooks/sentiment.yml with `monitor: 0s` (the peers watch nothing after healthy)
    and, unless `image_healthcheck`, `health.docker: false`: mlfleet then probes /health
    itself every 500ms, where the peers have Docker run the same probe every 500ms, instead
    of also waiting for the image's own HEALTHCHECK (interval 2s in the lab image)."""
    text = (REPO / "playbooks/sentiment.yml").read_text()
    text, n = re.subn(r"(?m)^monitor:\s*\S+", "monitor: 0s", text)
    if n != 1:
        raise ValueError("playbooks/sentiment.yml has no top-level `monitor:` line")
    if not image_healthcheck:
        text, n = re.subn(r"(?m)^health:\n", "health:\n  docker: false\n", text)
        if n != 1:
            raise ValueError("playbooks/sentiment.yml has no top-level `health:` mapping")
    path = workdir / f"sentiment-same-job{'-image-healthcheck' if image_healthcheck else ''}.yml"
    path.write_text(text)
    return path


def _mlfleet(inventory: Path, playbook: Path, state: Path, forks: int, *args: str) -> List[str]:
    return [str(BIN / "mlfleet"), "-i", str(inventory), "-p", str(playbook), "--state", str(state),
            "--forks", str(forks), *args]  # fmt: skip


def _ansible_env(control_dir: Path) -> Dict[str, str]:
    control_dir.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, ANSIBLE_CONFIG=str(PEERS / "ansible.cfg"),
                ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir))  # fmt: skip


def update_command(
    tool: str, tag: str, inventory: Path, forks: int, workdir: Path, run: str
) -> Command:
    """The command that moves every host to `tag` with `tool`. `run` names a fresh
    directory for per-run state (Ansible's SSH control sockets)."""
    env = dict(os.environ)
    if tool.startswith("mlfleet"):
        state = workdir / f"state-{tool}.db"
        if tool == "mlfleet-shipped" and tag != "v1":
            return _mlfleet(inventory, REPO / "playbooks/sentiment.yml", state, 20, "deploy", "--tag", tag), env  # fmt: skip
        playbook = same_job_playbook(workdir, image_healthcheck=tool == "mlfleet-image-hc")
        return _mlfleet(inventory, playbook, state, forks, "deploy", "--tag", tag, "--canary", "0", "--batch", "100%"), env  # fmt: skip
    if tool == "ansible":
        argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(PEERS / "update.yml"),
                "-f", str(forks), "-e", f"tag={tag}"]  # fmt: skip
        return argv, _ansible_env(workdir / "ssh" / run)
    if tool == "pyinfra":
        argv = [str(BIN / "pyinfra"), "-y", "--parallel", str(forks), str(PEERS / "pyinfra_inventory.py"),
                str(PEERS / "pyinfra_update.py"), "--data", f"tag={tag}"]  # fmt: skip
        return argv, dict(env, MLFLEET_BENCH_INVENTORY=str(inventory))
    if tool == "floor":
        return [sys.executable, str(PEERS / "floor.py"), str(inventory), tag], env
    raise ValueError(f"unknown tool {tool!r}")


PYINFRA_FACTS = ("server.Hostname", "server.Arch", "server.KernelVersion",
                 "server.LinuxDistribution", "hardware.Cpus", "hardware.Memory")  # fmt: skip


def facts_command(tool: str, inventory: Path, forks: int, workdir: Path, run: str) -> Command:
    env = dict(os.environ)
    if tool in ("mlfleet", "mlfleet-first"):
        state = workdir / "state-facts.db"
        return [str(BIN / "mlfleet"), "-i", str(inventory), "--state", str(state), "--forks", str(forks),
                "facts", "--json"], env  # fmt: skip
    if tool == "ansible":
        argv = [str(BIN / "ansible"), "all", "-i", str(inventory), "-m", "setup", "-f", str(forks), "-o"]  # fmt: skip
        return argv, _ansible_env(workdir / "ssh" / run)
    if tool == "pyinfra":
        argv = [str(BIN / "pyinfra"), "--parallel", str(forks), str(PEERS / "pyinfra_inventory.py"),
                "fact", *PYINFRA_FACTS]  # fmt: skip
        return argv, dict(env, MLFLEET_BENCH_INVENTORY=str(inventory))
    raise ValueError(f"unknown tool {tool!r}")
