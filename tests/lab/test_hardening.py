"""Hardened model containers on real engines: every default host (GPU ones included)
serves and passes its inference check with all capabilities dropped, a read-only root
filesystem, a PID limit, no-new-privileges and a non-root user; a playbook asking for a
sensitive mount or a root user in disguise is refused in one line before any host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.playbooks import PLAYBOOK
from tests.lab.sshrun import ssh
from tests.lab.test_controller import FIVE, serving


def cli(lab, tmp_path: Path, *args: str, playbook: Path = PLAYBOOK) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "mlfleet.controller", "-i", str(lab["inventory"]),
            "-p", str(playbook), "--state", str(tmp_path / "state.db"), "--limit", ",".join(FIVE),
            *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=900)


def test_every_default_host_serves_from_a_hardened_container(agent_hosts, tmp_path):
    lab = agent_hosts
    proc = cli(lab, tmp_path, "deploy", "--tag", "v2", "--canary", "0", "--batch", "100%", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    for name in FIVE:
        host = lab["hosts_by_name"][name]
        assert results[name]["result"] in ("updated", "unchanged"), results[name]
        assert (serving(host) or "").startswith("v2/"), name
        code, cid, err = ssh(host, "docker ps -q --filter label=io.mlfleet.app=sentiment")
        assert code == 0 and len(cid.split()) == 1, (name, cid, err)  # the one serving
        cid = cid.strip()
        code, out, err = ssh(host, f"docker inspect {cid}")
        assert code == 0, err
        (inspected,) = json.loads(out)
        hc = inspected["HostConfig"]
        assert hc["CapDrop"] == ["ALL"] and not hc["CapAdd"], (name, hc["CapDrop"], hc["CapAdd"])
        assert hc["ReadonlyRootfs"] is True and "/tmp" in (hc["Tmpfs"] or {}), name
        assert hc["PidsLimit"] and hc["PidsLimit"] > 0, name
        assert "no-new-privileges" in hc["SecurityOpt"] and not hc["Privileged"], name
        user = inspected["Config"]["User"]
        assert user and user.split(":")[0].lstrip("0") not in ("", "root"), (name, user)
        # Inside: the process is not root and the root filesystem cannot be written.
        code, out, _ = ssh(host, f"docker exec {cid} sh -c "
                                 "'id -u; touch /etc/x 2>&1; touch /tmp/x && echo tmp-ok'")  # fmt: skip
        lines = out.splitlines()
        assert lines[0] != "0" and "Read-only file system" in out and "tmp-ok" in out, out


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ('  user: "00"\n', "root"),
        ('  mounts: ["/etc:/host-etc:ro"]\n', "/etc"),
        ('  mounts: ["/var/run/docker.sock:/var/run/docker.sock"]\n', "docker.sock"),
    ],
)
def test_a_sensitive_mount_or_a_root_user_is_one_line_before_any_host(
    agent_hosts, tmp_path, extra, said
):
    lab = agent_hosts
    before = {n: serving(lab["hosts_by_name"][n]) for n in FIVE}
    text = PLAYBOOK.read_text()
    lines = text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("container:"))
    body = [line for line in lines[at + 1 :] if not (
        ("user:" in extra and line.startswith("  user:")) or
        ("mounts:" in extra and line.startswith("  mounts:")))]  # fmt: skip
    bad = tmp_path / "bad.yml"
    bad.write_text("".join(lines[: at + 1]) + extra + "".join(body))
    proc = cli(lab, tmp_path, "deploy", "--tag", "v3", playbook=bad)
    shown = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(shown) == 1, proc.stderr
    assert said in shown[0] and "bad.yml:" in shown[0] and "Traceback" not in proc.stderr
    assert {n: serving(lab["hosts_by_name"][n]) for n in FIVE} == before
