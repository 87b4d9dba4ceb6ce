"""apply / rollback / tick on the lab: the host ends with the new release healthy or the old
one healthy again, whatever fails. Each host is reached over SSH with the zipapp there."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from mlfleet.controller.lab.model_data import score
from mlfleet.controller.lab.sample_release import SAMPLE_TEXT, sentiment_desired
from tests.conftest import TEST_LAB, mlfleet
from tests.lab.conftest import agent, apply_request, engine_pull, events, put
from tests.lab.sshrun import ssh

TEXT = SAMPLE_TEXT
EXPECTED_VARIANT = {
    "edge-a100": "cuda12", "edge-t4": "cuda11", "edge-4090": "cpu", "edge-mi210": "rocm", "edge-cpu": "cpu",
}  # fmt: skip


def desired(lab: Dict[str, Any], host: Dict[str, Any], tag: str, **over: Any) -> Dict[str, Any]:
    return sentiment_desired(lab["registry"]["address"], host["data_dir"], tag, **over)


def put_desired(lab, host, tag: str) -> str:
    """The desired state as a file on the host, for an `apply PATH` run in the background;
    its images pulled ahead with the lab's login (a file on the host never holds it)."""
    state = desired(lab, host, tag)
    for variant in state["variants"]:
        engine_pull(lab, host, variant["image"])
    return put(host, json.dumps(state).encode(), f"desired-{tag}.json")


def apply(lab, name: str, tag: str, **over: Any):
    host = lab["hosts_by_name"][name]
    stdin = apply_request(lab, desired(lab, host, tag, **over))
    code, out, err = agent(host, "apply -", stdin=stdin)
    assert out.strip(), f"{name}: no result; stderr: {err[-2000:]}"
    return code, json.loads(out), events(err)


def serving(host) -> Optional[Dict[str, Any]]:
    """What answers /version and /predict on the host's port 8080 right now, or None."""
    try:
        with urllib.request.urlopen(f"http://{host['address']}:8080/version", timeout=3) as resp:
            version = json.loads(resp.read())
        req = urllib.request.Request(
            f"http://{host['address']}:8080/predict", data=json.dumps({"text": TEXT}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=3) as resp:
            version["prediction"] = json.loads(resp.read())["predictions"][0]
        return version
    except OSError:
        return None


def served(host) -> Dict[str, Any]:
    """What answers on the host's port 8080; the test fails when nothing does."""
    answer = serving(host)
    assert answer is not None, f"{host['name']}: nothing answers on port 8080"
    return answer


def running_releases(host) -> list:
    code, out, _ = ssh(
        host,
        "docker ps --filter label=io.mlfleet.app=sentiment --format '{{.Names}} {{.Label \"io.mlfleet.tag\"}}'",
    )
    assert code == 0
    return sorted(line.split() for line in out.strip().splitlines() if line.strip())


@pytest.fixture(scope="module")
def v1_everywhere(agent_hosts):
    names = list(EXPECTED_VARIANT)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = dict(zip(names, pool.map(lambda n: apply(agent_hosts, n, "v1"), names)))
    return agent_hosts, results


@pytest.mark.parametrize("name", list(EXPECTED_VARIANT))
def test_v1_serves_on_every_host_with_the_right_variant(v1_everywhere, name):
    lab, results = v1_everywhere
    code, result, progress = results[name]
    assert code == 0 and result["status"] == "succeeded", result
    assert result["variant"] == EXPECTED_VARIANT[name]
    host = lab["hosts_by_name"][name]
    answer = serving(host)
    assert answer and (answer["tag"], answer["variant"]) == ("v1", EXPECTED_VARIANT[name])
    expected = score(json.loads((Path(host["data_dir"]) / "model.json").read_text()), TEXT)
    assert answer["prediction"]["score"] == pytest.approx(expected["score"], abs=1e-6)
    if name == "edge-a100":
        assert answer["accelerator"] == "cuda 12.2 on driver 550.54.15"
    assert any(e.get("event") == "health" for e in progress)
    _, out, _ = ssh(
        host,
        "docker inspect -f '{{.Config.User}} {{.HostConfig.SecurityOpt}} {{range .Mounts}}{{.RW}}{{end}} {{.HostConfig.RestartPolicy.Name}}' sentiment.r1",
    )
    assert out.split() == ["10001:10001", "[no-new-privileges]", "false", "unless-stopped"]


def test_applying_the_serving_release_again_changes_nothing(v1_everywhere):
    lab, _ = v1_everywhere
    code, result, _ = apply(lab, "edge-4090", "v1")
    assert code == 0 and result["status"] == "unchanged"
    assert running_releases(lab["hosts_by_name"]["edge-4090"]) == [["sentiment.r1", "v1"]]


def test_v3_over_v1_pulls_only_the_small_top_layer(v1_everywhere):
    lab, _ = v1_everywhere
    code, result, _ = apply(lab, "edge-cpu", "v3")
    assert code == 0 and result["status"] == "succeeded", result
    assert 0 < result["bytes_pulled"] < 16 * 1024, result["bytes_pulled"]
    assert result["previous_tag"] == "v1"
    host = lab["hosts_by_name"]["edge-cpu"]
    assert served(host)["tag"] == "v3"
    assert [tag for _, tag in running_releases(host)] == ["v3"]


@pytest.mark.parametrize(("tag", "phase"), [("v4", "health"), ("v5", "monitor")])
def test_a_failing_release_is_rolled_back_and_the_old_one_serves(v1_everywhere, tag, phase):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-cpu"]
    before = served(host)["tag"]
    code, result, _ = apply(lab, "edge-cpu", tag)
    assert code != 0
    assert result["status"] == "rolled_back", result
    assert result["phase"] == phase
    assert result["health_evidence"] and result["reason"]
    after = serving(host)
    assert after and after["tag"] == before
    assert [t for _, t in running_releases(host)] == [before]


def test_preflight_refusals_leave_the_old_release_serving(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-cpu"]
    before = running_releases(host)
    container = {"ports": [{"container": 8080, "host": 8080}],
                 "mounts": [{"source": "/nonexistent/weights", "target": "/data"}]}  # fmt: skip
    code, result, _ = apply(lab, "edge-cpu", "v2", container=container)
    assert code != 0 and (result["status"], result["phase"]) == ("failed", "preflight")
    assert "/nonexistent/weights does not exist" in result["reason"]
    code, result, _ = apply(lab, "edge-cpu", "v9")
    assert code != 0 and (result["status"], result["phase"]) == ("failed", "preflight")
    assert "could not be pulled" in result["reason"]
    assert running_releases(host) == before
    assert serving(host) is not None


def test_a_full_disk_is_refused_in_preflight(agent_hosts):
    lab = agent_hosts
    host = lab["hosts_by_name"]["edge-disk"]
    code, result, _ = apply(lab, "edge-disk", "v1")
    assert result["status"] == "succeeded", result
    _, root_dir, _ = ssh(host, "docker info -f '{{.DockerRootDir}}'")
    filler = f"{root_dir.strip()}/filler"
    # Something else fills the engine's disk until less than 20 MiB are free.
    ssh(
        host,
        f"free=$(df -k --output=avail {root_dir.strip()} | tail -1); fallocate -l $(( (free - 16*1024) * 1024 )) {filler}",
    )
    try:
        code, result, _ = apply(lab, "edge-disk", "v3")
        assert code != 0 and (result["status"], result["phase"]) == ("failed", "preflight"), result
        assert "not enough disk" in result["reason"] and "MiB free" in result["reason"]
        assert served(host)["tag"] == "v1"
    finally:
        ssh(host, f"rm -f {filler}")


def _tick(host) -> Dict[str, Any]:
    code, out, err = agent(host, "tick --json")
    assert code == 0, err
    return json.loads(out)


def test_tick_restarts_a_killed_container_and_survives_an_engine_restart(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-4090"]
    ssh(host, "docker kill sentiment.r1")
    status = _tick(host)
    assert any("restarted" in a for a in status["actions"]), status
    assert served(host)["tag"] == "v1"
    mlfleet("lab", "--name", TEST_LAB, "engine", "edge-4090", "restart")
    _tick(host)
    deadline = time.monotonic() + 30
    while serving(host) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert served(host)["tag"] == "v1"


def test_an_agent_killed_mid_apply_is_repaired_by_the_next_tick(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-t4"]
    path = put_desired(lab, host, "v2")
    # Start the apply in the background, kill -9 it once the new container exists.
    ssh(
        host,
        f'nohup python3 "$MLFLEET_AGENT_DIR/mlfleet-agent.pyz" apply {path} > /dev/null 2>&1 &',
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, out, _ = ssh(host, "docker ps -a --filter label=io.mlfleet.tag=v2 -q")
        if out.strip():
            break
        time.sleep(0.2)
    ssh(host, "pkill -9 -f 'mlfleet-agent.pyz apply'")
    status = _tick(host)
    assert any("interrupted" in a for a in status["actions"]), status
    answer = serving(host)
    assert answer and answer["tag"] == "v1"
    assert [t for _, t in running_releases(host)] == ["v1"]


def test_rollback_on_request_and_history(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-mi210"]
    code, result, _ = apply(lab, "edge-mi210", "v2")
    assert result["status"] == "succeeded", result
    code, out, err = agent(host, "rollback --app sentiment --to v1")
    assert code == 0, out + err
    assert json.loads(out)["status"] == "rolled_back"
    assert served(host)["tag"] == "v1" and served(host)["variant"] == "rocm"
    code, out, _ = agent(host, "history --json")
    kinds = [e["kind"] for e in json.loads(out)["events"]]
    assert "succeeded" in kinds and "rolled_back" in kinds
    code, out, _ = agent(host, "status")
    assert "sentiment: v1 (rocm)" in out


def test_cron_runs_the_tick_on_the_host(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-a100"]
    env = " ".join(f"{k}={v}" for k, v in (
        ("DOCKER_HOST", host["docker_host"]), ("MLFLEET_ROOT", host["root"]),
        ("MLFLEET_DEVICE_ROOT", host["root"]), ("MLFLEET_AGENT_DIR", host["agent_dir"]),
    ))  # fmt: skip
    line = f"* * * * * {env} python3 {host['agent_dir']}/mlfleet-agent.pyz tick >> {host['agent_dir']}/tick.log 2>&1\n"
    (Path(host["cron_dir"]) / "root").write_text(line)
    (Path(host["cron_dir"]) / "cron.update").write_text("root\n")
    ssh(host, "docker stop sentiment.r1")
    assert serving(host) is None
    deadline = time.monotonic() + 80
    while serving(host) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert serving(host) is not None, (Path(host["agent_dir"]) / "tick.log").read_text()
    prom = Path(host["agent_dir"]) / "metrics" / "mlfleet.prom"
    while not prom.exists() and time.monotonic() < deadline + 30:
        time.sleep(0.5)  # the tick writes its report after the release is healthy again
    metrics = prom.read_text()
    assert 'mlfleet_release_info{app="sentiment",tag="v1",variant="cuda12"' in metrics


def test_tick_rolls_back_a_fresh_release_that_crashes_after_its_deployment(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-4090"]
    before = served(host)["tag"]
    # v5 passes its checks, then dies ~8 s after its first answer; no monitor window here,
    # so the apply commits it and only the tick can notice.
    code, result, _ = apply(lab, "edge-4090", "v5", monitor_s=0)
    assert code == 0 and result["status"] == "succeeded", result
    deadline = time.monotonic() + 40
    restarted = "0"
    while time.monotonic() < deadline and restarted == "0":
        time.sleep(1)
        _, restarted, _ = ssh(
            host, f"docker inspect -f '{{{{.RestartCount}}}}' {result['container']}"
        )
        restarted = restarted.strip() or "0"
    assert restarted != "0", "v5 never crashed"
    status = _tick(host)
    assert any("rolled back v5" in a for a in status["actions"]), status
    assert served(host)["tag"] == before


def test_daemon_runs_the_tick_without_cron(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-mi210"]
    ssh(
        host,
        'nohup python3 "$MLFLEET_AGENT_DIR/mlfleet-agent.pyz" daemon --interval 2 > /dev/null 2>&1 &',
    )
    try:
        _, name, _ = ssh(
            host, "docker ps --filter label=io.mlfleet.app=sentiment --format '{{.Names}}'"
        )
        ssh(host, f"docker stop {name.strip()}")
        deadline = time.monotonic() + 40
        while serving(host) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert serving(host) is not None
    finally:
        ssh(host, "pkill -f 'mlfleet-agent.pyz daemon'")


def test_tick_rolls_back_a_fresh_release_that_hangs_only_when_the_next_tick_confirms_it(
    v1_everywhere,
):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-cpu"]
    before = served(host)["tag"]
    code, result, _ = apply(lab, "edge-cpu", "v2", monitor_s=0)
    assert code == 0 and result["status"] == "succeeded", result
    pid = f"$(docker inspect -f '{{{{.State.Pid}}}}' {result['container']})"

    def hang(yes: bool) -> None:  # the model server stops answering, as a wedged process does
        assert ssh(host, f"kill -{'STOP' if yes else 'CONT'} {pid}")[0] == 0

    try:
        # One failing tick is not enough: a busy minute must not undo a release.
        hang(True)
        assert any("rolled back if the next tick confirms" in a for a in _tick(host)["actions"])
        hang(False)
        assert served(host)["tag"] == "v2"
        assert _tick(host)["actions"] == [] and served(host)["tag"] == "v2"
        # Sick on two ticks in a row: rolled back, the old release serves.
        hang(True)
        assert not any("rolled back v2" in a for a in _tick(host)["actions"])
        status = _tick(host)
        assert any("rolled back v2" in a for a in status["actions"]), status
        assert served(host)["tag"] == before
    finally:
        ssh(host, f"kill -CONT {pid} 2>/dev/null")


# --- the host heals itself (issue 13) ----------------------------------------------------


def _status(host) -> Dict[str, Any]:
    code, out, err = agent(host, "status --json")
    assert code == 0, err
    return json.loads(out)["apps"][0]


def test_a_removed_container_is_recreated_from_its_record_by_the_tick(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-t4"]
    before = served(host)
    current = _status(host)["current"]
    ssh(host, f"docker rm -f {current['container']}")  # by hand, or docker system prune
    assert serving(host) is None
    status = _tick(host)
    assert any(f"recreated {before['tag']}" in a for a in status["actions"]), status
    after = served(host)
    assert (after["tag"], after["variant"], after["prediction"]) == (
        before["tag"], before["variant"], before["prediction"],
    )  # fmt: skip
    app = _status(host)
    assert app["current"]["id"] == current["id"]  # the same release, not a new one
    assert app["last_event"]["event"] == "repaired" and app["healthy"]


def test_a_removed_image_is_pulled_again_by_its_digest(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-4090"]
    before = served(host)
    current = _status(host)["current"]
    ssh(host, f"docker rm -f {current['container']} && docker rmi -f {current['image']}")
    _, out, _ = ssh(host, f"docker image inspect {current['image']} >/dev/null 2>&1; echo $?")
    assert out.strip() != "0"  # gone
    mlfleet("lab", "--name", TEST_LAB, "login", "edge-4090")  # its operator's login
    try:
        status = _tick(host)
    finally:
        mlfleet("lab", "--name", TEST_LAB, "login", "edge-4090", "--logout")
    assert any(f"recreated {before['tag']}" in a for a in status["actions"]), status
    assert served(host)["tag"] == before["tag"]
    _, digests, _ = ssh(
        host, f"docker image inspect -f '{{{{json .RepoDigests}}}}' {current['image']}"
    )
    assert current["digest"] in json.loads(digests)  # the bits that were deployed


def test_a_controller_cut_off_during_the_commit_leaves_the_new_release_serving(v1_everywhere):
    """The controller's SSH session ends while the host proves and commits the release (a
    laptop that sleeps, a link that drops): the apply goes on; the new release serves."""
    from tests.lab.sshrun import connect

    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-cpu"]
    old = served(host)["tag"]
    new = "v3" if old != "v3" else "v2"
    path = put_desired(lab, host, new)
    started = time.time()
    client = connect(host)
    try:
        channel = client.get_transport().open_session()  # type: ignore[union-attr]
        channel.exec_command(f'python3 "$MLFLEET_AGENT_DIR/mlfleet-agent.pyz" apply {path}')
        progress = channel.makefile_stderr("r")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # read progress until the release answers
            event = json.loads(progress.readline() or "{}")
            if event.get("event") == "health" and event.get("ok"):
                break
    finally:
        client.close()  # the controller is gone, mid-monitor or mid-commit
    deadline = time.monotonic() + 90  # the monitor window, then the commit
    while time.monotonic() < deadline and _status(host)["current"]["tag"] != new:
        time.sleep(1)
    assert _status(host)["current"]["tag"] == new
    assert served(host)["tag"] == new
    _, out, _ = agent(host, "history --json")
    since = [e["kind"] for e in json.loads(out)["events"] if e["at"] >= started]
    assert since[0] == "succeeded" and "rolled_back" not in since, since


def test_an_engine_that_lost_everything_is_rebuilt_by_the_tick(v1_everywhere):
    """Every container and image gone (a wiped data root, a careless prune) and the engine
    restarted: the next tick brings the recorded release back, GPU wiring included, once
    the host has what the private registry asks of it (its operator's login)."""
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-mi210"]
    before = served(host)
    code, _, err = ssh(
        host, "docker rm -f $(docker ps -aq) >/dev/null && docker system prune -af >/dev/null"
    )
    assert code == 0, err
    _, images, _ = ssh(host, "docker images -q")
    assert images.strip() == ""
    mlfleet("lab", "--name", TEST_LAB, "engine", "edge-mi210", "restart")
    assert serving(host) is None
    # The registry wants credentials and none are on the host: the tick says so, and waits.
    status = _tick(host)
    assert serving(host) is None
    last = _status(host)["last_event"]
    assert last["cause"] == "needs_credentials", last
    assert "docker login" in last["message"] and "mlfleet_store_pull_credentials" in last["message"]
    # The operator logs in on the host: the next tick pulls with that login and rebuilds.
    mlfleet("lab", "--name", TEST_LAB, "login", "edge-mi210")
    try:
        status = _tick(host)
    finally:
        mlfleet("lab", "--name", TEST_LAB, "login", "edge-mi210", "--logout")
    assert any(f"recreated {before['tag']}" in a for a in status["actions"]), status
    after = served(host)
    assert (after["tag"], after["variant"]) == (before["tag"], "rocm")
    assert after["prediction"] == before["prediction"]


def _cron(host, line: str) -> None:
    """Replace the host's crontab as `crontab` does for its busybox crond."""
    (Path(host["cron_dir"]) / "root").write_text(line)
    (Path(host["cron_dir"]) / "cron.update").write_text("root\n")


def _wait_serving(host, timeout: float) -> Optional[Dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = serving(host)
        if answer is not None:
            return answer
        time.sleep(0.5)
    return None


def test_a_rebooted_host_serves_again_and_its_cron_runs_the_daemon_again(v1_everywhere):
    """`mlfleet_tick_interval: 5`: cron runs the daemon for each minute. After a reboot the
    engine brings the release back by its restart policy, and cron, back with the host,
    runs the daemon again, which heals in seconds without the controller."""
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-a100"]
    before = served(host)
    env = " ".join(f"{k}={v}" for k, v in (
        ("DOCKER_HOST", host["docker_host"]), ("MLFLEET_ROOT", host["root"]),
        ("MLFLEET_DEVICE_ROOT", host["root"]), ("MLFLEET_AGENT_DIR", host["agent_dir"]),
    ))  # fmt: skip
    agent_dir = host["agent_dir"]
    _cron(host, f"* * * * * {env} python3 {agent_dir}/mlfleet-agent.pyz daemon --interval 5 --for 60"
                f" >> {agent_dir}/tick.log 2>&1\n")  # fmt: skip
    try:
        mlfleet("lab", "--name", TEST_LAB, "reboot", "edge-a100")
        booted = time.time()
        after = _wait_serving(host, 60)
        assert after is not None and after["tag"] == before["tag"]
        status = Path(agent_dir) / "status.json"
        deadline = time.monotonic() + 90  # cron's next minute, then the daemon's first tick
        while time.monotonic() < deadline:
            if status.exists() and json.loads(status.read_text())["time"] > booted:
                break
            time.sleep(1)
        assert json.loads(status.read_text())["time"] > booted, "no tick since the reboot"
        code, _, err = ssh(host, f"docker rm -f {_status(host)['current']['container']}")
        assert code == 0, err
        assert serving(host) is None
        healed = _wait_serving(host, 60)  # the daemon ticks every 5 s
        assert healed is not None and healed["tag"] == before["tag"]
        deadline = time.monotonic() + 60  # it answers before its checks pass and are recorded
        while time.monotonic() < deadline and _status(host)["last_event"]["event"] != "repaired":
            time.sleep(1)
        assert _status(host)["last_event"]["event"] == "repaired"
    finally:
        _cron(host, "")
        ssh(host, "pkill -f 'mlfleet-agent.pyz daemon'")


def test_a_host_that_lost_its_gpu_serves_on_the_cpu_variant(v1_everywhere):
    """The driver is not loaded after a reboot (a kernel update without the module): the
    engine cannot start the CUDA container; the tick serves the release on the playbook's
    CPU variant rather than nothing, and says why."""
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-t4"]
    before = served(host)
    assert before["variant"] == "cuda11"
    try:
        # Its operator's login: the CPU variant's image must be pulled with no controller.
        mlfleet("lab", "--name", TEST_LAB, "login", "edge-t4")
        mlfleet("lab", "--name", TEST_LAB, "gpu", "edge-t4", "lost")
        mlfleet("lab", "--name", TEST_LAB, "reboot", "edge-t4")
        time.sleep(3)
        assert serving(host) is None  # no driver: the CUDA container did not start at boot
        status = _tick(host)
        assert any("on variant cpu instead of cuda11" in a for a in status["actions"]), status
        after = served(host)
        assert (after["tag"], after["variant"]) == (before["tag"], "cpu")
        assert after["prediction"] == pytest.approx(before["prediction"], abs=1e-4)
        last = _status(host)["last_event"]
        assert (last["event"], last["cause"]) == ("repaired", "gpu_lost"), last
        prom = (Path(host["agent_dir"]) / "metrics" / "mlfleet.prom").read_text()
        assert 'mlfleet_app_problem{app="sentiment",cause="gpu_lost"} 1' in prom
    finally:
        mlfleet("lab", "--name", TEST_LAB, "gpu", "edge-t4", "back")
        mlfleet("lab", "--name", TEST_LAB, "login", "edge-t4", "--logout")


def test_a_container_of_someone_elses_on_the_port_is_reported_and_not_fought(
    v1_everywhere, tmp_path
):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-4090"]
    before = served(host)
    current = _status(host)["current"]
    code, _, err = ssh(host, f"docker rm -f {current['container']} && docker run -d --name debug-server"
                             f" -p 8080:8080 --entrypoint python3 {current['image']} -m http.server 8080")  # fmt: skip
    assert code == 0, err
    try:
        _tick(host)
        last = _status(host)["last_event"]
        assert (last["event"], last["cause"]) == ("blocked", "port_taken"), last
        assert "held by container debug-server" in last["message"]
        _, running, _ = ssh(host, "docker inspect -f '{{.State.Running}}' debug-server")
        assert running.strip() == "true"  # theirs, left alone
        playbook = Path(__file__).parents[2] / "playbooks" / "sentiment.yml"
        proc = mlfleet("-i", str(lab["inventory"]), "-p", str(playbook), "--state",
                       str(tmp_path / "state.db"), "--limit", "edge-4090", "status", "--json",
                       check=False)  # fmt: skip
        row = json.loads(proc.stdout)["hosts"][0]
        assert (row["last_action"], row["last_action_cause"]) == ("blocked", "port_taken"), row
    finally:
        ssh(host, "docker rm -f debug-server")
        _cron(host, "")  # the controller's contact put the agent's cron entry in place
    status = _tick(host)
    assert any(f"recreated {before['tag']}" in a for a in status["actions"]), status
    assert served(host)["tag"] == before["tag"]


def test_a_vanished_mount_source_is_reported_and_the_release_returns_with_it(v1_everywhere):
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-cpu"]
    before = served(host)
    data = Path(host["data_dir"])
    away = data.with_name(data.name + ".away")
    ssh(host, f"docker rm -f {_status(host)['current']['container']}")
    data.rename(away)  # moved by someone; never deleted by mlfleet
    try:
        _tick(host)
        last = _status(host)["last_event"]
        assert (last["event"], last["cause"]) == ("blocked", "mount_missing"), last
        assert str(data) in last["message"] and serving(host) is None
    finally:
        away.rename(data)
    status = _tick(host)
    assert any(f"recreated {before['tag']}" in a for a in status["actions"]), status
    assert served(host)["tag"] == before["tag"]


def test_a_full_disk_under_the_agent_dir_is_one_line_and_the_model_keeps_serving(
    v1_everywhere, tmp_path
):
    """The filesystem of the agent's own directory fills up (here a small tmpfs over it):
    the tick still brings a stopped release back, says in one line what is wrong, status
    reports it, and once there is space again nothing of the history is lost."""
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-mi210"]
    before = served(host)
    agent_dir = Path(host["agent_dir"])
    _, history, _ = agent(host, "history --json --limit 100000")
    saved = tmp_path / "agent"
    shutil.copytree(agent_dir, saved, symlinks=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(agent_dir)], check=True)
    try:
        shutil.copytree(saved, agent_dir, symlinks=True, dirs_exist_ok=True)
        fill = agent_dir / "fill"
        with fill.open("wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * (1 << 20))
                    fh.flush()
            except OSError:
                pass
        ssh(host, f"docker stop {_status(host)['current']['container']}")
        code, _, err = agent(host, "tick")
        errors = [line for line in err.splitlines() if not line.startswith("{")]  # progress
        assert code != 0 and len(errors) == 1 and "free space" in errors[0], err
        assert served(host)["tag"] == before["tag"]  # brought back all the same
        code, out, err = agent(host, "status --json")
        assert code == 0, err
        assert any("is full" in p for p in json.loads(out)["problems"])
        fill.unlink()
        _tick(host)
        _, after, _ = agent(host, "history --json --limit 100000")
        old, new = json.loads(history), json.loads(after)
        assert [r["id"] for r in new["releases"]] == [r["id"] for r in old["releases"]]
        assert {e["id"] for e in old["events"]} <= {e["id"] for e in new["events"]}
    finally:
        (agent_dir / "fill").unlink(missing_ok=True)
        kept = tmp_path / "kept"
        shutil.copytree(agent_dir, kept, symlinks=True)
        subprocess.run(["umount", str(agent_dir)], check=True)
        shutil.copytree(kept, agent_dir, symlinks=True, dirs_exist_ok=True)


def test_an_engine_restarted_mid_apply_ends_with_a_healthy_release(v1_everywhere):
    """The engine restarts (an upgrade, a crash) while an apply proves its new release:
    the apply ends one way or the other, and with the tick the host serves a healthy
    release; no history row is lost."""
    lab, _ = v1_everywhere
    host = lab["hosts_by_name"]["edge-t4"]
    old = served(host)["tag"]
    new = "v2" if old != "v2" else "v3"
    _, history, _ = agent(host, "history --json --limit 100000")
    path = put_desired(lab, host, new)
    ssh(host, f'nohup python3 "$MLFLEET_AGENT_DIR/mlfleet-agent.pyz" apply {path}'
              f' > "$MLFLEET_AGENT_DIR/apply-{new}.out" 2>&1 &')  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, out, _ = ssh(host, f"docker ps -a --filter label=io.mlfleet.tag={new} -q")
        if out.strip():
            break
        time.sleep(0.2)
    mlfleet("lab", "--name", TEST_LAB, "engine", "edge-t4", "restart")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        code, _, _ = ssh(host, "pgrep -f 'mlfleet-agent.pyz apply'")
        if code != 0:
            break
        time.sleep(1)
    for _ in range(3):  # what the next ticks do, without waiting a minute for each
        if _tick(host)["apps"][0]["healthy"]:
            break
    app = _status(host)
    assert app["healthy"] and served(host)["tag"] == app["current"]["tag"] in (old, new), app
    _, after, _ = agent(host, "history --json --limit 100000")
    before_ids = {r["id"] for r in json.loads(history)["releases"]}
    assert before_ids <= {r["id"] for r in json.loads(after)["releases"]}
    assert {e["id"] for e in json.loads(history)["events"]} <= {
        e["id"] for e in json.loads(after)["events"]
    }
