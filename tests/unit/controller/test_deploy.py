"""The deployment's wave loop, failure budget and fleet rollback, and the other fleet
commands, against fake hosts that answer with protocol records (tests/unit/controller/
fake_agent.py): no root, no lab. What is asserted is what an operator sees: which release
each host serves, each host's result, the deployment's status and the exit code."""

from __future__ import annotations

import errno
import hashlib
import http.server
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import paramiko
import pytest

from mlfleet.agent.protocol import Event, EventKind, HostFacts
from mlfleet.controller.commands import (
    fleet_status,
    gather_facts,
    install_agents,
    plan,
    rollback_fleet,
    rollback_under_lock,
)
from mlfleet.controller.deploy import RolloutOptions, deploy
from mlfleet.controller.errors import ConfigError, ExitCode
from mlfleet.controller.fleet_lock import FleetLockHeld, Holder
from mlfleet.controller.hosts import Host
from mlfleet.controller.outcomes import DeployReport, Outcome
from mlfleet.controller.playbook import hardening_lines, load_playbook
from mlfleet.controller.rollout import PER_VARIANT, Action, BatchSpec, Canary, parse_budget
from mlfleet.controller.session import FleetSession
from mlfleet.controller.state import ControllerState
from mlfleet.controller.transport import CommandResult
from tests.paths import REPO
from tests.unit.agent.test_selection import a100_host, amd_host, cpu_host, t4_host
from tests.unit.controller.fake_agent import FakeHost, FakeRelease, FakeTransport, tiny_bundle

PLAYBOOK = load_playbook(REPO / "playbooks" / "sentiment.yml")
VARIANTS = ("cuda12", "cuda11", "rocm", "cpu")


class _Registry(http.server.BaseHTTPRequestHandler):
    """Answers manifest requests: 200 for the tags it holds, 404 for others. `pushes` counts
    pushes of every tag: a new count is new bits under the same names."""

    tags: Set[str] = set()
    pushes = 1

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        tag = self.path.rsplit("/", 1)[-1]
        found = tag in self.tags
        body = (
            b'{"schemaVersion": 2, "layers": [], "config": {"digest": "sha256:%d", "size": 0}}'
            % (self.pushes)
        )
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
        self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
        self.send_header("Content-Length", str(len(body) if found else 0))
        self.end_headers()
        if found and self.command == "GET":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    _Registry.tags = {f"{t}-{v}" for t in ("v1", "v2", "v3", "v4") for v in VARIANTS}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class Breaking(FakeTransport):
    """A fake host whose link or agent goes wrong: `error` raised by every command run
    (`where="run"`) or by the agent's copy (`where="put"`); or its agent answering a
    command (`detect`, `status`, ...) with `answers[command]` on stdout."""

    def __init__(self, host: Host, fake: FakeHost, app: str, error: Optional[Exception],
                 where: str, answers: Dict[str, str]):  # fmt: skip
        super().__init__(host, fake, app)
        self.error, self.where, self.answers = error, where, answers

    def run(self, argv: Sequence[str], *, stdin: Optional[bytes] = None, timeout: float = 600.0,
            on_stderr_line: Optional[Callable[[str], None]] = None) -> CommandResult:  # fmt: skip
        if self.error is not None and self.where == "run":
            raise self.error
        return super().run(argv, stdin=stdin, timeout=timeout, on_stderr_line=on_stderr_line)

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        if self.error is not None and self.where == "put":
            raise self.error
        super().put(data, path, mode)

    def _agent(self, args: List[str], stdin: Optional[bytes],
               on_stderr_line: Optional[Callable[[str], None]]) -> CommandResult:  # fmt: skip
        if args and args[0] in self.answers:
            return CommandResult(0, self.answers[args[0]], "")
        return super()._agent(args, stdin, on_stderr_line)


def breaking(error: Optional[Exception] = None, where: str = "run",
             answers: Optional[Dict[str, str]] = None) -> Callable[[Host, FakeHost, str], FakeTransport]:  # fmt: skip
    return lambda host, fake, app: Breaking(host, fake, app, error, where, answers or {})


class Fleet:
    """Fake hosts, the session over them, and the controller's state DB."""

    def __init__(self, tmp_path: Path, registry: str, facts: Dict[str, HostFacts]):
        self.fakes = {name: FakeHost(f) for name, f in facts.items()}
        host_vars = {
            "mlfleet_registry": registry,
            "mlfleet_registry_scheme": "http",
            "model_data_dir": "/srv/models/sentiment",
        }
        self.hosts = [Host(name, dict(host_vars)) for name in facts]
        self.state = ControllerState(tmp_path / "state.db")
        self.bundle = tiny_bundle(tmp_path)
        self.progress: List[Tuple[str, str]] = []
        # A host's own fake transport (`breaking(...)`), else a FakeTransport.
        self.transport_of: Dict[str, Callable[[Host, FakeHost, str], FakeTransport]] = {}

    def transport(self, host: Host) -> FakeTransport:
        return self.transport_of.get(host.name, FakeTransport)(
            host, self.fakes[host.name], PLAYBOOK.app
        )

    def session(self, hosts: Optional[List[str]] = None) -> FleetSession:
        chosen = [h for h in self.hosts if hosts is None or h.name in hosts]
        return FleetSession(
            chosen, self.state, connector=self.transport,
            bundle=self.bundle, forks=4, progress=lambda h, m: self.progress.append((h, m)),
        )  # fmt: skip

    def serving(self) -> Dict[str, Optional[str]]:
        return {name: fake.serving() for name, fake in self.fakes.items()}

    def deploy(self, tag: str, canary: Canary = 1, batch: BatchSpec = "50%", max_fail: object = 0,
               on_failure: str = "pause", hosts: Optional[List[str]] = None) -> DeployReport:  # fmt: skip
        options = RolloutOptions(canary, batch, parse_budget(max_fail), Action(on_failure))
        with self.session(hosts) as session:
            return deploy(session, PLAYBOOK, tag, options)


FOUR = {
    "edge-a100": a100_host(),
    "edge-t4": t4_host(),
    "edge-mi210": amd_host(),
    "edge-cpu": cpu_host(),
}
VARIANT = {"edge-a100": "cuda12", "edge-t4": "cuda11", "edge-mi210": "rocm", "edge-cpu": "cpu"}


@pytest.fixture
def fleet(tmp_path: Path, registry: str) -> Fleet:
    return Fleet(tmp_path, registry, dict(FOUR))


def on(fleet: Fleet, tag: str) -> None:
    for name, fake in fleet.fakes.items():
        fake.current = FakeRelease(tag, VARIANT[name], f"r/sentiment:{tag}-{VARIANT[name]}")


def test_every_host_gets_the_variant_its_hardware_runs(fleet: Fleet) -> None:
    report = fleet.deploy("v3")
    assert report.status == "succeeded" and report.exit_code() == ExitCode.OK
    assert fleet.serving() == {n: f"v3/{v}" for n, v in VARIANT.items()}
    assert {h.host: (h.outcome, h.variant) for h in report.hosts} == {
        n: (Outcome.UPDATED, v) for n, v in VARIANT.items()
    }
    # Canary, then batches of half the rest (rounded down): 1 + 1 + 1 + 1 hosts.
    waves = [r["wave"] for r in fleet.state.host_results(deployment_id=report.deployment)]
    assert sorted(waves) == ["batch 1", "batch 2", "batch 3", "canary"]
    again = fleet.deploy("v3")
    assert {h.outcome for h in again.hosts} == {Outcome.UNCHANGED}


def test_a_tag_pushed_again_mid_rollout_does_not_reach_the_later_waves(fleet: Fleet) -> None:
    """The digests are resolved once, before the canary: hosts of later waves get the bits
    the canary was proven on, not what the tag names by the time their wave comes."""

    def repush_after_the_canary(host: str, message: str) -> None:
        fleet.progress.append((host, message))
        if message.startswith("batch 1:") and _Registry.pushes == before:
            _Registry.pushes += 1  # as the batch starts

    before = _Registry.pushes
    with fleet.session() as session:
        session.progress = repush_after_the_canary
        options = RolloutOptions(1, "50%", parse_budget(0), Action("pause"))
        report = deploy(session, PLAYBOOK, "v2", options)
    assert _Registry.pushes == before + 1  # the tag did move, after the canary
    assert [h.wave for h in report.hosts].count("canary") == 1
    for h in report.hosts:
        repository = (h.image or "").rsplit(":", 1)[0]
        assert h.digest == f"{repository}@{_digest_at(before)}", (h.host, h.wave)
    assert _digest_at(before) != _digest_at(before + 1)


def _digest_at(pushes: int) -> str:
    body = b'{"schemaVersion": 2, "layers": [], "config": {"digest": "sha256:%d", "size": 0}}' % (
        pushes
    )
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_a_failing_canary_halts_and_no_other_host_is_touched(fleet: Fleet) -> None:
    on(fleet, "v2")
    for fake in fleet.fakes.values():
        fake.failing_tags.add("v4")
    report = fleet.deploy("v4")
    assert report.status == "halted" and report.exit_code() == ExitCode.FAILED
    by_host = {h.host: h for h in report.hosts}
    assert by_host["edge-a100"].outcome is Outcome.ROLLED_BACK
    assert {by_host[n].outcome for n in ("edge-t4", "edge-mi210", "edge-cpu")} == {Outcome.SKIPPED}
    # Each host left says why: the wave that halted and its failure.
    said, why = by_host["edge-cpu"].reason or "", by_host["edge-a100"].reason
    assert said.startswith("deployment halted after canary: edge-a100: "), said
    assert why and why in said
    assert [n for n, f in fleet.fakes.items() if f.applied] == ["edge-a100"]
    assert fleet.serving() == {n: f"v2/{v}" for n, v in VARIANT.items()}


@pytest.mark.parametrize(
    ("failing", "max_fail", "status", "applied"),
    [
        # batch 1 holds edge-t4 and edge-mi210 (no canary, batches of 2)
        ({"edge-t4"}, 1, "failed", 4),  # 1 failure of 2: not more than the budget of 1: on
        ({"edge-t4", "edge-mi210"}, 1, "halted", 2),  # 2 > 1: pause
        ({"edge-t4"}, "50%", "failed", 4),  # 1 of 2 = 50%, not more than 50%: on
        ({"edge-t4"}, "49.9%", "halted", 2),  # 50% > 49.9%: pause
        ({"edge-t4"}, 0, "halted", 2),  # the first failure fires a budget of 0
    ],
)
def test_the_budget_fires_only_when_failures_strictly_exceed_it(
    fleet: Fleet, failing: Set[str], max_fail: object, status: str, applied: int
) -> None:
    # Order the fleet so that the first batch is edge-t4 and edge-mi210.
    fleet.hosts.sort(key=lambda h: ["edge-t4", "edge-mi210", "edge-a100", "edge-cpu"].index(h.name))
    on(fleet, "v2")
    for name in failing:
        fleet.fakes[name].failing_tags.add("v3")
    report = fleet.deploy("v3", canary=0, batch=2, max_fail=max_fail)
    assert report.status == status
    assert sum(1 for f in fleet.fakes.values() if f.applied) == applied


def test_rollback_policy_returns_the_updated_hosts_to_their_previous_release(fleet: Fleet) -> None:
    on(fleet, "v2")
    fleet.fakes["edge-cpu"].failing_tags.add("v3")
    report = fleet.deploy("v3", canary=0, batch=4, on_failure="rollback")
    assert fleet.serving() == {n: f"v2/{v}" for n, v in VARIANT.items()}
    assert {h.outcome for h in report.hosts} == {Outcome.ROLLED_BACK}
    assert report.exit_code() == ExitCode.FAILED


def test_an_unreachable_host_fails_alone_and_exits_5(fleet: Fleet) -> None:
    fleet.fakes["edge-mi210"].reachable = False
    report = fleet.deploy("v3", canary=0, batch=4, max_fail=1)
    by_host = {h.host: h for h in report.hosts}
    assert by_host["edge-mi210"].outcome is Outcome.UNREACHABLE
    assert "No route to host" in (by_host["edge-mi210"].reason or "")
    assert {by_host[n].outcome for n in ("edge-a100", "edge-t4", "edge-cpu")} == {Outcome.UPDATED}
    assert report.exit_code() == ExitCode.UNREACHABLE


def test_a_host_whose_python_cannot_run_the_agent_is_an_agent_failure_not_unreachable(
    fleet: Fleet,
) -> None:
    fleet.fakes["edge-cpu"].python_ok = False
    report = fleet.deploy("v3", canary=0, batch=4, max_fail=1)
    cpu = next(h for h in report.hosts if h.host == "edge-cpu")
    assert cpu.outcome is Outcome.AGENT_FAILED
    assert "mlfleet_python" in (cpu.reason or "") and "Python 3.8+" in (cpu.reason or "")
    assert report.exit_code() == ExitCode.AGENT_FAILED
    with fleet.session() as session:
        rows = {r.host: r for r in fleet_status(session, PLAYBOOK.app)}
        facts = {r.host: r for r in gather_facts(session)}
    assert (
        rows["edge-cpu"].health == "agent_failed"
        and facts["edge-cpu"].outcome is Outcome.AGENT_FAILED
    )


def test_status_says_what_each_agent_last_did(fleet: Fleet) -> None:
    on(fleet, "v3")
    fleet.fakes["edge-cpu"].last_event = Event(
        EventKind.REPAIRED,
        "the container of v3 was gone; recreated from its record",
        "sentiment",
        1700000000.0,
    )
    with fleet.session() as session:
        rows = {r.host: r for r in fleet_status(session, PLAYBOOK.app)}
    assert (rows["edge-cpu"].last_action, rows["edge-cpu"].last_action_at) == (
        "repaired",
        1700000000.0,
    )
    assert (
        rows["edge-cpu"].to_dict()["last_action_message"].startswith("the container of v3 was gone")
    )
    assert rows["edge-t4"].last_action is None


def test_an_agent_of_a_newer_schema_is_named_not_guessed_at(fleet: Fleet) -> None:
    fleet.fakes["edge-t4"].newer_schema = True
    with fleet.session() as session:
        rows = {r.host: r for r in fleet_status(session, PLAYBOOK.app)}
    assert rows["edge-t4"].health == "agent_failed"
    assert "schema 2" in (rows["edge-t4"].reason or "") and "upgrade mlfleet" in (
        rows["edge-t4"].reason or ""
    )
    assert rows["edge-cpu"].health == "nothing deployed"


def test_an_interrupted_deployment_is_recorded_and_a_new_one_finishes_the_job(fleet: Fleet) -> None:
    # A controller killed after the canary: its deployment is still `running`, its pid gone.
    stale = fleet.state.start_deployment(app="sentiment", tag="v3", hosts=4, pid=_dead_pid())
    fleet.fakes["edge-a100"].current = FakeRelease("v3", "cuda12", "r/sentiment:v3-cuda12")
    report = fleet.deploy("v3")
    by_host = {h.host: h.outcome for h in report.hosts}
    assert by_host["edge-a100"] is Outcome.UNCHANGED
    assert {by_host[n] for n in ("edge-t4", "edge-mi210", "edge-cpu")} == {Outcome.UPDATED}
    stale_row = next(d for d in fleet.state.deployments() if d["id"] == stale)
    assert stale_row["status"] == "interrupted"
    assert fleet.state.lock_status() is None  # released when done


def test_a_tag_missing_from_the_registry_stops_before_any_host(fleet: Fleet) -> None:
    with pytest.raises(ConfigError, match="not in the registry"):
        fleet.deploy("v9")
    assert not any(f.applied for f in fleet.fakes.values())
    assert fleet.state.lock_status() is None


def test_each_host_gets_the_credential_of_its_own_registry_auth_file(
    fleet: Fleet, registry: str, tmp_path: Path
) -> None:
    """A group's credentials file wins over the controller's Docker config; the credential
    goes to the host on the apply's stdin, and is kept there only where the operator opted
    in; the deployment's records never hold it."""
    import base64
    import json

    files = {}
    for who in ("robot-a", "robot-b"):
        auth = base64.b64encode(f"{who}:pw-of-{who}".encode()).decode()
        files[who] = tmp_path / f"{who}.json"
        files[who].write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    fleet.hosts = [
        Host(h.name, dict(h.vars, mlfleet_registry_auth_file=str(files["robot-b" if h.name == "edge-cpu" else "robot-a"]),
                          mlfleet_store_pull_credentials=h.name == "edge-cpu"))
        for h in fleet.hosts
    ]  # fmt: skip
    report = fleet.deploy("v1", canary=0, batch="100%")
    assert report.status == "succeeded"
    got = {name: fake.credentials[-1] for name, fake in fleet.fakes.items()}
    assert {n: (c.username, c.password) for n, c in got.items() if c} == {
        "edge-a100": ("robot-a", "pw-of-robot-a"), "edge-t4": ("robot-a", "pw-of-robot-a"),
        "edge-mi210": ("robot-a", "pw-of-robot-a"), "edge-cpu": ("robot-b", "pw-of-robot-b"),
    }  # fmt: skip
    assert (fleet.state.path.read_bytes().find(b"pw-of-robot")) == -1


def test_a_relay_of_raw_tcp_to_a_tls_registry_is_refused_not_hung(fleet: Fleet) -> None:
    extra = {
        "mlfleet_transfer": "relay",
        "mlfleet_registry_scheme": "https",
        "mlfleet_relay_registry": "upstream",
    }
    fleet.hosts = [Host(h.name, dict(h.vars, **extra)) for h in fleet.hosts]
    with fleet.session() as session, pytest.raises(ConfigError, match="relay_registry: cache"):
        session.relay_source(fleet.hosts[0], ("127.0.0.1", 5000))


def test_a_per_variant_canary_holds_one_host_of_each_variant_the_plan_selects(
    tmp_path: Path, registry: str
) -> None:
    facts = {"cpu1": cpu_host(), "cpu2": cpu_host(), "a100": a100_host(), "t4": t4_host(),
             "cpu3": cpu_host(), "a100b": a100_host()}  # fmt: skip
    fleet = Fleet(tmp_path, registry, facts)
    with fleet.session() as session:
        gather_facts(session)
        options = RolloutOptions(PER_VARIANT, "50%", parse_budget(0), Action.PAUSE)
        report = plan(session, PLAYBOOK, "v3", options)
    assert (report.waves[0].name, list(report.waves[0].hosts)) == ("canary", ["cpu1", "a100", "t4"])
    assert report.to_dict()["waves"][0] == {"name": "canary", "hosts": ["cpu1", "a100", "t4"]}
    fleet.fakes["t4"].failing_tags.add("v3")  # this release breaks on the CUDA 11 host
    deployed = fleet.deploy("v3", canary=PER_VARIANT)
    assert deployed.status == "halted"  # the CUDA 11 host failed in the canary
    assert [n for n, f in fleet.fakes.items() if f.applied] == ["cpu1", "a100", "t4"]


def test_plan_carries_the_waves_and_the_budget(fleet: Fleet) -> None:
    with fleet.session() as session:
        report = plan(
            session, PLAYBOOK, "v3", RolloutOptions(1, "50%", parse_budget("10%"), Action.ROLLBACK)
        )
    data = report.to_dict()
    assert data["waves"] == [
        {"name": "canary", "hosts": ["edge-a100"]},
        {"name": "batch 1", "hosts": ["edge-t4"]},
        {"name": "batch 2", "hosts": ["edge-mi210"]},
        {"name": "batch 3", "hosts": ["edge-cpu"]},
    ]
    assert (data["budget"], data["on_failure"]) == ("10%", "rollback")
    assert {h["host"]: h["variant"] for h in data["hosts"]} == VARIANT
    assert {h["host"]: h["change"] for h in data["hosts"]}["edge-t4"] == "install v3 (cuda11)"
    # What the playbook relaxes of the hardened containers is in the plan: here only the
    # port published on every address (playbooks/sentiment.yml keeps every other default).
    assert data["hardening"] == hardening_lines(PLAYBOOK) and len(data["hardening"]) == 1
    assert data["hardening"][0].startswith("ports published on every address")


def test_rollback_returns_each_host_to_its_previous_release(fleet: Fleet) -> None:
    fleet.deploy("v2")
    fleet.deploy("v3")
    with fleet.session() as session:
        results = rollback_fleet(session, PLAYBOOK.app, None)
        rows = {r.host: r for r in fleet_status(session, PLAYBOOK.app)}
    assert {r.outcome for r in results} == {Outcome.ROLLED_BACK}
    assert {r.tag for r in results} == {"v2"}
    assert {n: (r.tag, r.health) for n, r in rows.items()} == {
        n: ("v2", "healthy") for n in VARIANT
    }


def test_a_rollback_holds_the_fleet_lock_and_waits_for_no_deployment(fleet: Fleet) -> None:
    """`mlfleet rollback` takes the lock a deployment takes: refused, touching nothing, while
    another controller's deployment holds it on a host; it gives its own locks back."""
    fleet.deploy("v2")
    fleet.deploy("v3")
    theirs = Holder("cd" * 16, "bob", "bob-laptop", 4343, time.time(), time.time() + 3600,
                    "deploy sentiment v4")  # fmt: skip
    fleet.fakes["edge-cpu"].fleet_lock = theirs.to_json()
    with fleet.session() as session:
        with pytest.raises(FleetLockHeld, match="held by bob@bob-laptop"):
            rollback_under_lock(session, PLAYBOOK.app, None)
        assert {r.tag for r in fleet_status(session, PLAYBOOK.app)} == {"v3"}
        fleet.fakes["edge-cpu"].fleet_lock = None
        results = rollback_under_lock(session, PLAYBOOK.app, None)
    assert {(r.outcome, r.tag) for r in results} == {(Outcome.ROLLED_BACK, "v2")}
    assert not any(f.fleet_lock for f in fleet.fakes.values())
    assert fleet.state.lock_status() is None


def test_the_agent_is_copied_once_then_left_alone(fleet: Fleet) -> None:
    with fleet.session() as session:
        first = install_agents(session)
        second = install_agents(session)
    assert {r.outcome for r in first} == {Outcome.INSTALLED}
    assert {r.outcome for r in second} == {Outcome.UNCHANGED}
    assert all("# mlfleet-agent" in f.crontab for f in fleet.fakes.values())


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


# --- one bad host -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "where", "outcome", "said"),
    [
        pytest.param(PermissionError(errno.EACCES, "Permission denied"), "put", Outcome.AGENT_FAILED,
                     "edge-t4: could not copy the agent to /var/lib/mlfleet/mlfleet-agent.pyz: "
                     "Permission denied (set mlfleet_become: true", id="sftp-permission"),
        pytest.param(paramiko.SSHException("SSH session not active"), "run", Outcome.UNREACHABLE,
                     "connection to the host failed: SSHException: SSH session not active",
                     id="paramiko"),
        pytest.param(socket.timeout("timed out"), "run", Outcome.UNREACHABLE,
                     "connection to the host failed: TimeoutError: timed out", id="timeout"),
        pytest.param(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "put",
                     Outcome.UNREACHABLE, "ConnectionResetError: [Errno 104] Connection reset by peer",
                     id="reset-during-copy"),
        pytest.param(EOFError(), "run", Outcome.UNREACHABLE, "connection to the host failed: EOFError",
                     id="eof"),
        pytest.param(RuntimeError("a bug"), "run", Outcome.FAILED,
                     "RuntimeError: a bug (run again with --debug for the traceback)", id="bug"),
    ],
)  # fmt: skip
def test_whatever_one_host_raises_is_its_failure_not_the_deployments(
    fleet: Fleet, error: Exception, where: str, outcome: Outcome, said: str
) -> None:
    fleet.transport_of["edge-t4"] = breaking(error, where)
    report = fleet.deploy("v3", canary=0, batch=4, max_fail=1)
    by_host = {h.host: h for h in report.hosts}
    assert by_host["edge-t4"].outcome is outcome
    assert said in (by_host["edge-t4"].reason or ""), by_host["edge-t4"].reason
    assert {by_host[n].outcome for n in ("edge-a100", "edge-mi210", "edge-cpu")} == {
        Outcome.UPDATED
    }
    assert report.status == "failed" and fleet.state.lock_status() is None
    recorded = {
        r["host"]: r["result"] for r in fleet.state.host_results(deployment_id=report.deployment)
    }
    assert recorded["edge-t4"] == outcome.value
    assert ("edge-t4", f"{outcome.value}: {by_host['edge-t4'].reason}") in fleet.progress


def _rows(command: str, session: FleetSession) -> Dict[str, Tuple[str, Optional[str]]]:
    """host -> (outcome, reason) of one fleet command."""
    if command == "status":
        return {r.host: (r.health, r.reason) for r in fleet_status(session, PLAYBOOK.app)}
    if command == "facts":
        return {
            r.host: (r.outcome.value if r.outcome else "facts", r.reason)
            for r in gather_facts(session)
        }
    if command == "install":
        return {r.host: (r.outcome.value, r.reason) for r in install_agents(session)}
    if command == "rollback":
        return {
            r.host: (r.outcome.value, r.reason) for r in rollback_fleet(session, PLAYBOOK.app, None)
        }
    options = RolloutOptions(1, "50%", parse_budget(0), Action.PAUSE)
    return {h.host: (h.outcome.value if h.outcome else "planned", h.reason)
            for h in plan(session, PLAYBOOK, "v3", options).hosts}  # fmt: skip


FINE = {"status": "healthy", "facts": "facts", "install": "installed", "rollback": "rolled_back",
        "plan": "planned"}  # fmt: skip


@pytest.mark.parametrize("command", sorted(FINE))
@pytest.mark.parametrize(
    ("error", "outcome", "said"),
    [
        (paramiko.SSHException("Channel closed."), "unreachable",
         "connection to the host failed: SSHException: Channel closed."),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable",
         "OSError: [Errno 113] No route to host"),
        (KeyError("apps"), "failed", "KeyError: 'apps' (run again with --debug"),
    ],
)  # fmt: skip
def test_every_fleet_command_reports_a_raising_host_and_goes_on(
    fleet: Fleet, command: str, error: Exception, outcome: str, said: str
) -> None:
    on(fleet, "v3")
    for name, fake in fleet.fakes.items():
        fake.previous = FakeRelease("v2", VARIANT[name], f"r/sentiment:v2-{VARIANT[name]}")
    fleet.transport_of["edge-mi210"] = breaking(error)
    with fleet.session() as session:
        rows = _rows(command, session)
    state, reason = rows.pop("edge-mi210")
    assert state == outcome and said in (reason or ""), reason
    assert {state for state, _ in rows.values()} == {FINE[command]}


@pytest.mark.parametrize(
    ("command", "answer", "said"),
    [
        # A record of the wrong shape: the protocol's reader raised AttributeError on it.
        ("facts", "detect", "agent detect: an answer this controller cannot read (AttributeError:"),
        # Nested deeper than json can read: RecursionError.
        ("status", "status", "agent status failed: [[[["),
        ("status", "status", "agent status: host status: expected a JSON object, got list"),
    ],
)
def test_an_answer_the_controller_cannot_read_is_that_hosts_agent_failure(
    fleet: Fleet, command: str, answer: str, said: str
) -> None:
    on(fleet, "v3")
    text = {
        "detect": json.dumps(dict(t4_host().to_dict(), os=5)),
        "status": "[" * 100_000 if "[[[[" in said else "[]",
    }[answer]
    fleet.transport_of["edge-t4"] = breaking(answers={answer: text})
    with fleet.session() as session:
        rows = _rows(command, session)
    state, reason = rows.pop("edge-t4")
    assert state == "agent_failed" and said in (reason or ""), reason
    assert {s for s, _ in rows.values()} == {FINE[command]}


def test_a_fleet_lock_held_on_one_host_by_another_controller_stops_before_any_host(
    fleet: Fleet,
) -> None:
    """Another operator's deployment holds the lock on edge-mi210 (kept on the host):
    this one is refused with their name, applies nothing anywhere, and leaves no lock of
    its own behind; once theirs is gone, it runs and gives its locks back."""
    on(fleet, "v2")
    theirs = Holder("ab" * 16, "ann", "ann-laptop", 4242, time.time(), time.time() + 3600,
                    "deploy sentiment v9")  # fmt: skip
    fleet.fakes["edge-mi210"].fleet_lock = theirs.to_json()
    with pytest.raises(
        FleetLockHeld, match="the fleet lock on edge-mi210 is held by ann@ann-laptop"
    ):
        fleet.deploy("v3")
    assert not any(f.applied for f in fleet.fakes.values())
    assert [n for n, f in fleet.fakes.items() if f.fleet_lock] == ["edge-mi210"]
    assert fleet.state.lock_status() is None  # the state DB's own lock given back too
    fleet.fakes["edge-mi210"].fleet_lock = Holder(**{**theirs.__dict__, "expires": 0.0}).to_json()
    report = fleet.deploy("v3")  # their lease ran out: taken over
    assert report.status == "succeeded"
    assert not any(f.fleet_lock for f in fleet.fakes.values())
