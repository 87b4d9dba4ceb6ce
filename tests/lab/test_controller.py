"""`mlfleet` deploys across the lab fleet, through the CLI as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml

from mlfleet.controller.state import ControllerState
from tests.conftest import TEST_LAB, mlfleet
from tests.lab.playbooks import PLAYBOOK

FIVE = ["edge-a100", "edge-t4", "edge-4090", "edge-mi210", "edge-cpu"]
VARIANT = {
    "edge-a100": "cuda12",
    "edge-t4": "cuda11",
    "edge-4090": "cpu",
    "edge-mi210": "rocm",
    "edge-cpu": "cpu",
}


@pytest.fixture(scope="module")
def ctl(agent_hosts, tmp_path_factory):
    """Runs `mlfleet -i <lab inventory> -p playbooks/sentiment.yml ...` with its own state."""
    work = tmp_path_factory.mktemp("controller")
    state = work / "state.db"

    def run(
        *args: str, inventory: Optional[Path] = None, limit: str = ",".join(FIVE)
    ) -> subprocess.CompletedProcess:
        argv = [
            "-i",
            str(inventory or agent_hosts["inventory"]),
            "-p",
            str(PLAYBOOK),
            "--state",
            str(state),
        ]
        if limit:
            argv += ["--limit", limit]
        return subprocess.run([sys.executable, "-m", "mlfleet.controller", *argv, *args],
                              capture_output=True, text=True, timeout=900)  # fmt: skip

    run.lab = agent_hosts  # type: ignore[attr-defined]
    run.state = state  # type: ignore[attr-defined]
    run.work = work  # type: ignore[attr-defined]
    return run


def results(proc: subprocess.CompletedProcess) -> Dict[str, Dict[str, Any]]:
    assert proc.stdout.strip(), proc.stderr
    return {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}


def serving(host: Dict[str, Any]) -> Optional[str]:
    try:
        with urllib.request.urlopen(f"http://{host['address']}:8080/version", timeout=3) as resp:
            data = json.loads(resp.read())
            return f"{data['tag']}/{data['variant']}"
    except OSError:
        return None


def fleet_serves(lab: Dict[str, Any], names: List[str]) -> Dict[str, Optional[str]]:
    return {n: serving(lab["hosts_by_name"][n]) for n in names}


def test_v2_then_v3_across_the_fleet_then_v3_again_changes_nothing(ctl):
    # v2 everywhere in one wave: the starting point (the rollout itself is v3's, below).
    proc = ctl("deploy", "--tag", "v2", "--canary", "0", "--batch", "100%", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = ctl("deploy", "--tag", "v3", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "succeeded"
    for name, r in results(proc).items():
        assert r["result"] == "updated" and r["variant"] == VARIANT[name], r
        assert r["image"].endswith(f":v3-{VARIANT[name]}")
        assert r["bytes"] < 16 * 1024  # at most the top layer crossed (none if it was there)
    assert any(r["bytes"] > 0 for r in results(proc).values())
    assert fleet_serves(ctl.lab, FIVE) == {n: f"v3/{VARIANT[n]}" for n in FIVE}
    # The canary went first, alone.
    waves = [
        r["wave"] for r in ControllerState(ctl.state).host_results(deployment_id=out["deployment"])
    ]
    assert sorted(waves).count("canary") == 1
    again = ctl("deploy", "--tag", "v3", "--json")
    assert again.returncode == 0
    assert {r["result"] for r in results(again).values()} == {"unchanged"}
    status = ctl("status", "--json")
    hosts = {h["host"]: h for h in json.loads(status.stdout)["hosts"]}
    assert {n: (hosts[n]["tag"], hosts[n]["variant"], hosts[n]["health"]) for n in FIVE} == {
        n: ("v3", VARIANT[n], "healthy") for n in FIVE
    }


def test_a_failing_canary_halts_the_deployment_and_touches_no_other_host(ctl):
    proc = ctl("deploy", "--tag", "v4", "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["status"] == "halted"
    by_host = results(proc)
    assert by_host["edge-a100"]["result"] == "rolled_back"
    assert {by_host[n]["result"] for n in FIVE[1:]} == {"skipped"}
    assert fleet_serves(ctl.lab, FIVE) == {n: f"v3/{VARIANT[n]}" for n in FIVE}


def test_rollback_policy_returns_every_host_to_its_previous_release(ctl):
    proc = ctl(
        "deploy",
        "--tag",
        "v4",
        "--canary",
        "0",
        "--max-fail",
        "1",
        "--on-failure",
        "rollback",
        "--json",
    )
    assert proc.returncode == 1
    assert fleet_serves(ctl.lab, FIVE) == {n: f"v3/{VARIANT[n]}" for n in FIVE}


def test_a_tag_missing_from_the_registry_stops_before_any_host(ctl):
    before = len(ControllerState(ctl.state).host_results())
    proc = ctl("deploy", "--tag", "v9")
    assert proc.returncode == 2
    assert "not in the registry" in proc.stderr and "v9-cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(ControllerState(ctl.state).host_results()) == before


def test_bad_inventory_playbook_and_limit_are_one_line_each(ctl):
    bad_inventory = ctl.work / "bad-inventory.yml"
    bad_inventory.write_text("all:\n  hosts:\n    web1:\n      ansible_port: twenty-two\n")
    proc = ctl("inventory", inventory=bad_inventory, limit="")
    assert proc.returncode == 2 and f"{bad_inventory}:4" in proc.stderr, proc.stderr
    bad_playbook = ctl.work / "bad.yml"
    bad_playbook.write_text(PLAYBOOK.read_text().replace("retain:", "retian:"))
    proc = subprocess.run([sys.executable, "-m", "mlfleet.controller", "-i", str(ctl.lab["inventory"]), "-p",
                           str(bad_playbook), "plan", "--tag", "v3"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and f"{bad_playbook}:" in proc.stderr and "retian" in proc.stderr, (
        proc.stderr
    )
    proc = ctl("deploy", "--tag", "v3", limit="edge-nope")
    assert proc.returncode == 2 and "selects no host" in proc.stderr and "edge-nope" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_changed_host_key_stops_that_host_only(ctl):
    lab = ctl.lab
    known = ctl.work / "known_hosts"
    lines = Path(lab["hosts"][0]["known_hosts"]).read_text().splitlines()
    t4, cpu = lab["hosts_by_name"]["edge-t4"], lab["hosts_by_name"]["edge-cpu"]
    t4_key = next(line for line in lines if line.startswith(t4["address"] + " ")).split(" ", 1)[1]
    # edge-cpu's entry now holds edge-t4's key: what a reinstalled or spoofed host looks like.
    known.write_text("\n".join(f"{cpu['address']} {t4_key}" if line.startswith(cpu["address"] + " ") else line
                               for line in lines) + "\n")  # fmt: skip
    doc = yaml.safe_load(Path(lab["inventory"]).read_text())
    doc["all"]["vars"]["mlfleet_known_hosts"] = str(known)
    inventory = ctl.work / "inventory-changed-key.yml"
    inventory.write_text(yaml.safe_dump(doc))
    proc = ctl("deploy", "--tag", "v3", "--canary", "0", "--batch", "100%", "--max-fail", "1", "--json",
               inventory=inventory, limit="edge-4090,edge-cpu")  # fmt: skip
    by_host = results(proc)
    assert by_host["edge-cpu"]["result"] == "unreachable"
    assert (
        "host key changed" in by_host["edge-cpu"]["reason"]
        and "SHA256:" in by_host["edge-cpu"]["reason"]
    )
    assert by_host["edge-4090"]["result"] == "unchanged"
    assert proc.returncode == 5


def test_a_held_lock_stops_the_deployment(ctl):
    state = ControllerState(ctl.state)
    state.acquire_lock("a test holds it")
    try:
        proc = ctl("deploy", "--tag", "v3")
        assert proc.returncode == 4
        assert "fleet lock is held" in proc.stderr and "a test holds it" in proc.stderr
    finally:
        state.release_lock()


def test_an_unreachable_host_does_not_stop_the_others(ctl):
    mlfleet("lab", "--name", TEST_LAB, "link", "edge-mi210", "down")
    try:
        proc = ctl("deploy", "--tag", "v2", "--canary", "0", "--batch", "100%", "--max-fail", "1", "--json",
                   limit="edge-mi210,edge-cpu")  # fmt: skip
    finally:
        mlfleet("lab", "--name", TEST_LAB, "link", "edge-mi210", "up")
    by_host = results(proc)
    assert by_host["edge-mi210"]["result"] == "unreachable"
    assert by_host["edge-cpu"]["result"] == "updated"
    assert serving(ctl.lab["hosts_by_name"]["edge-cpu"]) == "v2/cpu"
    assert proc.returncode == 5


def test_a_controller_killed_mid_deployment_is_recorded_and_the_next_deploy_finishes(ctl):
    state = ControllerState(ctl.state)
    before = {d["id"] for d in state.deployments(limit=1000)}
    argv = ["-i", str(ctl.lab["inventory"]), "-p", str(PLAYBOOK), "--state", str(ctl.state), "--limit",
            ",".join(FIVE), "deploy", "--tag", "v1"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "mlfleet.controller", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        new: List[int] = []
        while time.monotonic() < deadline:
            new = [d["id"] for d in state.deployments(limit=1000) if d["id"] not in before]
            if new and state.host_results(deployment_id=new[0]):
                break  # the canary is done: kill the controller in the middle of the rollout
            time.sleep(0.2)
        assert new, "the deployment never started"
    finally:
        proc.kill()
        proc.wait()
    canary = state.host_results(deployment_id=new[0])[0]["host"]
    again = ctl("deploy", "--tag", "v1", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    by_host = results(again)
    assert by_host[canary]["result"] == "unchanged"  # not redone
    assert {r["result"] for r in by_host.values()} <= {"updated", "unchanged"}
    assert (
        next(d for d in state.deployments(limit=1000) if d["id"] == new[0])["status"]
        == "interrupted"
    )
    assert fleet_serves(ctl.lab, FIVE) == {n: f"v1/{VARIANT[n]}" for n in FIVE}


def test_a_host_behind_a_jump_host(ctl):
    lab = ctl.lab
    doc = yaml.safe_load(Path(lab["inventory"]).read_text())
    cpu = lab["hosts_by_name"]["edge-cpu"]
    for group in doc["all"]["children"].values():
        if "edge-4090" in group.get("hosts", {}):
            group["hosts"]["edge-4090"]["mlfleet_jump_host"] = f"root@{cpu['address']}:22"
    inventory = ctl.work / "inventory-jump.yml"
    inventory.write_text(yaml.safe_dump(doc))
    proc = ctl("status", "--json", inventory=inventory, limit="edge-4090")
    assert proc.returncode == 0, proc.stderr
    assert results(proc)["edge-4090"]["health"] == "healthy"
    # Through a jump host that does not answer, the host is unreachable: the jump is really used.
    for group in doc["all"]["children"].values():
        if "edge-4090" in group.get("hosts", {}):
            group["hosts"]["edge-4090"]["mlfleet_jump_host"] = "root@127.0.0.1:1"
    inventory.write_text(yaml.safe_dump(doc))
    proc = ctl("status", "--json", inventory=inventory, limit="edge-4090")
    assert results(proc)["edge-4090"]["health"] == "unreachable"


def test_agent_install_is_idempotent_and_facts_are_stored(ctl):
    first = ctl("agent", "install", "--json", limit="edge-cpu,ssh1")
    assert first.returncode == 0, first.stderr
    again = ctl("agent", "install", "--json", limit="edge-cpu,ssh1")
    assert {h["result"] for h in json.loads(again.stdout)["hosts"]} == {"unchanged"}
    cron = (Path(ctl.lab["hosts_by_name"]["ssh1"]["cron_dir"]) / "root").read_text()
    assert cron.count("# mlfleet-agent") == 1 and " tick " in cron
    facts = ctl("facts", "--json", limit="edge-t4,edge-mi210")
    assert facts.returncode == 0, facts.stderr
    hosts = json.loads(facts.stdout)["hosts"]
    assert hosts["edge-t4"]["nvidia"]["driver_version"] == "470.182.03"
    assert hosts["edge-mi210"]["amd"]["rocm_version"] == "6.1.2"
    saved = ControllerState(ctl.state).facts("edge-t4")
    assert saved is not None, "the facts of edge-t4 were not saved"
    assert saved["gpus"][0]["model"] == "Tesla T4"


def test_on_failure_rollback_returns_updated_hosts_to_their_previous_release(ctl):
    assert ctl("deploy", "--tag", "v2", limit="edge-cpu").returncode == 0
    before = serving(ctl.lab["hosts_by_name"]["edge-cpu"])
    assert before == "v2/cpu"
    mlfleet("lab", "--name", TEST_LAB, "link", "edge-mi210", "down")
    try:
        proc = ctl("deploy", "--tag", "v3", "--canary", "0", "--batch", "100%", "--max-fail", "0",
                   "--on-failure", "rollback", "--json", limit="edge-mi210,edge-cpu")  # fmt: skip
    finally:
        mlfleet("lab", "--name", TEST_LAB, "link", "edge-mi210", "up")
    by_host = results(proc)
    assert by_host["edge-mi210"]["result"] == "unreachable"
    # edge-cpu was updated, then returned to what it served before, by the failure action.
    assert by_host["edge-cpu"]["result"] == "rolled_back"
    assert serving(ctl.lab["hosts_by_name"]["edge-cpu"]) == before
    assert proc.returncode == 1


def test_hosts_with_stored_facts_need_only_the_image_of_their_variant(ctl, tmp_path):
    from mlfleet.controller.lab import lab_registry
    from mlfleet.controller.lab.images import REPOSITORY
    from mlfleet.controller.registry import MANIFEST_V2

    # A tag built for the CPU variant alone (a team that has no GPU image of it yet).
    registry = lab_registry.client(ctl.lab["registry"])
    found = registry.get_manifest(REPOSITORY, "v3-cpu")
    assert found is not None, "the lab registry has no v3-cpu"
    manifest, _ = found
    registry.put_manifest(REPOSITORY, "cpuonly-cpu", json.dumps(manifest).encode(), MANIFEST_V2)
    state = tmp_path / "state.db"

    def run(*args: str) -> subprocess.CompletedProcess:
        argv = [
            "-i",
            str(ctl.lab["inventory"]),
            "-p",
            str(PLAYBOOK),
            "--state",
            str(state),
            "--limit",
            "edge-cpu",
        ]
        return subprocess.run([sys.executable, "-m", "mlfleet.controller", *argv, *args],
                              capture_output=True, text=True, timeout=900)  # fmt: skip

    # Nothing known about the host: it might select any variant, so every image must exist.
    refused = run("deploy", "--tag", "cpuonly")
    assert refused.returncode == 2 and "cpuonly-cuda12" in refused.stderr, refused.stderr
    assert run("facts").returncode == 0
    deployed = run("deploy", "--tag", "cpuonly", "--json")
    assert deployed.returncode == 0, deployed.stderr
    assert results(deployed)["edge-cpu"]["variant"] == "cpu"
    assert "no host's stored facts select them" in deployed.stderr


def test_a_host_whose_python_cannot_run_the_agent_is_an_agent_failure_with_what_to_do(ctl):
    lab = ctl.lab
    before = serving(lab["hosts_by_name"]["edge-cpu"])
    doc = yaml.safe_load(Path(lab["inventory"]).read_text())
    for group in doc["all"]["children"].values():
        if "edge-cpu" in group.get("hosts", {}):
            group["hosts"]["edge-cpu"]["mlfleet_python"] = "/usr/bin/python2.7"
    inventory = ctl.work / "inventory-no-python3.yml"
    inventory.write_text(yaml.safe_dump(doc))
    proc = ctl("deploy", "--tag", "v2", "--json", inventory=inventory, limit="edge-cpu")
    cpu = results(proc)["edge-cpu"]
    assert cpu["result"] == "agent_failed" and proc.returncode == 6, cpu
    assert "/usr/bin/python2.7" in cpu["reason"] and "mlfleet_python" in cpu["reason"], cpu
    assert serving(lab["hosts_by_name"]["edge-cpu"]) == before
    # Every command says the same, never "unreachable": the host answered.
    for command in ("status", "rollback", "plan", "facts", "agent"):
        args: Tuple[str, ...] = ("agent", "install") if command == "agent" else (command,)
        args += ("--tag", "v2") if command == "plan" else ()
        proc = ctl(*args, "--json", inventory=inventory, limit="edge-cpu")
        assert proc.returncode == 6, (command, proc.stdout, proc.stderr)
        assert "mlfleet_python" in proc.stdout and "unreachable" not in proc.stdout, (
            command,
            proc.stdout,
        )
