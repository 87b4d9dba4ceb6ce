"""What the operator's terminal shows of text that came from hosts: a health response body,
a container log, a reason, a GPU name, a host name. Printed as plain text (rich markup in
it is shown, not applied, and cannot crash the command) with every control character
escaped (no escape sequence reaches the terminal). A fake fleet runs the deployment; the
CLI's own progress printer and tables render it."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import pytest
from rich.console import Console

from mlfleet.agent.desired import DesiredState
from mlfleet.agent.protocol import ApplyResult, ApplyStatus, Event, EventKind, HostStatus
from mlfleet.controller import cli
from mlfleet.controller.commands import fleet_status, gather_facts
from mlfleet.controller.deploy import RolloutOptions, deploy
from mlfleet.controller.hosts import Host
from mlfleet.controller.outcomes import (
    DeployReport,
    HostResult,
    InstallResult,
    Outcome,
    StatusRow,
)
from mlfleet.controller.rollout import Action, parse_budget
from mlfleet.controller.session import FleetSession
from mlfleet.controller.state import ControllerState
from tests.unit.agent.test_selection import cpu_host
from tests.unit.controller.fake_agent import FakeHost, FakeRelease, FakeTransport, tiny_bundle
from tests.unit.controller.test_deploy import PLAYBOOK, registry  # noqa: F401 (a fixture)

HOSTILE = "[/x] [bold]pwned[/bold] \x1b]0;owned title\x07\x1b[2J\x1b[31mred\r\nfake: ok\x9b1m"
SHOWN = "[/x] [bold]pwned[/bold] \\x1b]0;owned title\\x07\\x1b[2J\\x1b[31mred\\r\\nfake: ok\\x9b1m"


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """What the CLI prints to stderr and stdout (a wide console, no colours: any escape
    sequence in it came from the text printed)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=400, highlight=False, force_terminal=False)
    monkeypatch.setattr(cli, "console", console)
    monkeypatch.setattr(cli, "out", console)
    yield buffer


def _shown(screen: io.StringIO) -> str:
    text = screen.getvalue()
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text), text
    return text


def _render(table: object) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=400, force_terminal=False).print(table)
    return _shown(buffer)


class _HostileHost(FakeTransport):
    """An agent whose health check failed with a hostile body and container log."""

    def _apply(self, desired: DesiredState, say: Callable[[str], None]) -> ApplyResult:
        say(json.dumps(Event(EventKind.STARTED, f"started {HOSTILE}", desired.app, 1.0).to_dict()))
        result = super()._apply(desired, say)
        result.status = ApplyStatus.FAILED
        result.reason = f"unhealthy after 3.0s: HTTP 500 {HOSTILE}"
        result.health_evidence = [f"GET /health: 500 {HOSTILE}", f"log: {HOSTILE}"]
        return result

    def _status(self) -> HostStatus:
        return replace(super()._status(), problems=[f"disk full {HOSTILE}"])


@pytest.fixture
def hostile_fleet(tmp_path: Path, registry: str) -> Iterator[Callable[[], FleetSession]]:  # noqa: F811
    fake = FakeHost(cpu_host(), current=FakeRelease("v1", "cpu", "r/sentiment:v1-cpu"))
    hosts = [Host(f"edge-{HOSTILE}", {"mlfleet_registry": registry, "mlfleet_registry_scheme": "http",
                                       "model_data_dir": "/srv/models"})]  # fmt: skip
    state = ControllerState(tmp_path / "state.db")
    bundle = tiny_bundle(tmp_path)

    def session() -> FleetSession:
        return FleetSession(hosts, state, connector=lambda h: _HostileHost(h, fake, PLAYBOOK.app),
                            bundle=bundle, progress=cli._host_progress)  # fmt: skip

    yield session


def test_a_hostile_deployment_is_shown_literally_and_escaped(
    hostile_fleet: Callable[[], FleetSession], screen: io.StringIO
) -> None:
    options = RolloutOptions(0, "100%", parse_budget(1), Action.PAUSE)
    with hostile_fleet() as session:
        report = deploy(session, PLAYBOOK, "v2", options)
    assert report.hosts[0].outcome is Outcome.FAILED
    progress = _shown(screen)
    assert f"· edge-{SHOWN} started {SHOWN}\n" in progress
    assert f"· edge-{SHOWN} failed: unhealthy after 3.0s: HTTP 500 {SHOWN}\n" in progress
    table = _render(cli.deploy_table(report))
    assert f"edge-{SHOWN}" in table and "unhealthy after 3.0s: HTTP 500 [/x] [bold]pwned" in table
    # --json: the evidence (the body and the log) as JSON strings, escaped by JSON.
    data = json.dumps(report.to_dict())
    assert "\x1b" not in data and json.loads(data)["hosts"][0]["evidence"][1] == f"log: {HOSTILE}"


def test_hostile_status_and_facts_are_shown_escaped(
    hostile_fleet: Callable[[], FleetSession], screen: io.StringIO
) -> None:
    with hostile_fleet() as session:
        rows = fleet_status(session, PLAYBOOK.app)
        facts = gather_facts(session)
    assert f"disk full {SHOWN}" in _render(cli.status_table(rows))
    assert f"edge-{SHOWN}" in _render(cli.facts_table(facts))


@pytest.mark.parametrize(
    "table",
    [
        lambda: cli.status_table([StatusRow("edge-1", "unreachable", reason=f"edge-1: {HOSTILE}")]),
        lambda: cli.rollback_table([HostResult("edge-1", Outcome.FAILED, reason=HOSTILE, tag=HOSTILE)]),
        lambda: cli.install_table(f"agent {HOSTILE}", [InstallResult("edge-1", Outcome.AGENT_FAILED,
                                                                     reason=HOSTILE)]),
        lambda: cli.deploy_table(DeployReport("failed", 1, "v2", "", [HostResult("edge-1", Outcome.FAILED,
                                                                                 reason=HOSTILE)])),
    ],
)  # fmt: skip
def test_every_table_shows_host_text_escaped(table: Callable[[], object]) -> None:
    shown = _render(table())
    assert SHOWN[:60] in shown


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("host 'edge-1': `image` [x:B] is not valid", "error: host 'edge-1': `image` [x:B] is not valid\n"),
        ("inv.yml:3: \x1b]0;title\x07 [/x]", "error: inv.yml:3: \\x1b]0;title\\x07 [/x]\n"),
    ],
)  # fmt: skip
def test_an_error_line_is_plain_text(screen: io.StringIO, message: str, line: str) -> None:
    cli._error_line(message)
    assert _shown(screen) == line


def test_a_lock_reason_from_the_state_db_is_escaped(screen: io.StringIO, tmp_path: Path) -> None:
    state = ControllerState(tmp_path / "state.db")
    state.acquire_lock(f"deploy sentiment {HOSTILE}")
    inventory = tmp_path / "hosts.yml"  # a name that never resolves: the hosts' part is quick
    inventory.write_text("all:\n  hosts:\n    edge-1.invalid: {}\n")
    argv = ["-i", str(inventory), "--state", str(tmp_path / "state.db"), "lock", "status"]
    assert cli.main(argv) == 0
    assert SHOWN in _shown(screen)


def test_debug_logs_are_escaped_too(screen: io.StringIO) -> None:
    import logging

    record = logging.LogRecord("mlfleet.x", logging.DEBUG, "f", 1, f"edge-1 {HOSTILE}", None, None)
    formatted = cli._EscapedFormatter("debug: %(message)s").format(record)
    assert formatted == f"debug: edge-1 {SHOWN.replace(chr(92) + 'n', chr(10))}"
