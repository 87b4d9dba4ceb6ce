"""The wire contract: every record survives its own JSON, a newer schema is refused in one
line rather than guessed at, and every command line the controller builds is one the
agent's own parser accepts with the meaning intended."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlfleet.agent import protocol
from mlfleet.agent.cli import build_parser
from mlfleet.agent.desired import STRATEGIES
from mlfleet.agent.protocol import (
    AgentPlace,
    ApplyResult,
    ApplyStatus,
    AppStatus,
    Event,
    EventKind,
    Health,
    HealthSample,
    HostStatus,
    Phase,
    ProtocolError,
    ReleaseStatus,
    ReleaseView,
    SchemaTooNew,
    Selection,
    Strategy,
    VersionInfo,
)
from mlfleet.agent.selection import Rejection
from tests.unit.agent.test_selection import a100_host

text = st.text(max_size=20)
maybe_text = st.none() | text
times = st.floats(min_value=0, max_value=2e9, allow_nan=False)


def wire(data: Dict[str, Any]) -> Dict[str, Any]:
    """What the other side reads: the record as JSON text, parsed again."""
    return json.loads(json.dumps(data))


selections = st.builds(
    Selection,
    variant=maybe_text,
    rejected=st.lists(st.builds(Rejection, text, text), max_size=3),
    warnings=st.lists(text, max_size=2),
    notes=st.lists(text, max_size=2),
)


@given(
    status=st.sampled_from(ApplyStatus),
    phase=st.none() | st.sampled_from(Phase),
    reason=maybe_text,
    evidence=st.lists(text, max_size=4),
    timings=st.dictionaries(st.sampled_from(["select_s", "start_s", "total_s"]), times),
    pulled=st.integers(min_value=0, max_value=2**40),
    selection=st.none() | selections,
)
def test_apply_results_survive_the_wire(
    status: ApplyStatus,
    phase: Optional[Phase],
    reason: Optional[str],
    evidence: List[str],
    timings: Dict[str, float],
    pulled: int,
    selection: Optional[Selection],
) -> None:
    result = ApplyResult(status, "sentiment", "v3", "12", variant="cpu", reason=reason, phase=phase,
                         health_evidence=evidence, timings=timings, bytes_pulled=pulled, selection=selection)  # fmt: skip
    assert ApplyResult.from_dict(wire(result.to_dict())) == result


releases = st.builds(
    ReleaseView,
    id=st.integers(min_value=1, max_value=10**6),
    tag=text,
    variant=maybe_text,
    image=maybe_text,
    digest=maybe_text,
    container=maybe_text,
    status=st.sampled_from(ReleaseStatus),
    deployment=text,
    created_at=times,
    activated_at=st.none() | times,
    reason=maybe_text,
)
apps = st.builds(
    AppStatus,
    app=text,
    current=st.none() | releases,
    running=st.booleans(),
    healthy=st.booleans(),
    last_health=st.none() | st.builds(HealthSample, times, st.booleans(), text),
    previous=maybe_text,
)


@given(
    st.builds(
        HostStatus, times, st.none() | times, st.lists(apps, max_size=3), st.lists(text, max_size=3)
    )
)
def test_host_status_survives_the_wire(status: HostStatus) -> None:
    assert HostStatus.from_dict(wire(status.to_dict())) == status


@given(
    st.builds(Event, st.sampled_from(EventKind), text, maybe_text, times, st.none() | st.booleans())
)
def test_events_survive_the_wire(event: Event) -> None:
    back = Event.from_dict(wire(event.to_dict()))
    assert back == Event(event.kind, event.message, event.app, round(event.time, 3), event.ok)


@given(selections)
def test_selections_survive_the_wire(selection: Selection) -> None:
    assert protocol.selection_from_dict(wire(protocol.selection_to_dict(selection))) == selection


def test_facts_and_version_survive_the_wire() -> None:
    facts = a100_host()
    assert protocol.facts_from_dict(wire(facts.to_dict())) == facts
    version = VersionInfo("0.1.0", "3.8.10", "/var/lib/mlfleet/cache/abc")
    assert VersionInfo.from_dict(wire(version.to_dict())) == version


@pytest.mark.parametrize(
    "read",
    [ApplyResult.from_dict, HostStatus.from_dict, Event.from_dict, VersionInfo.from_dict,
     protocol.selection_from_dict, protocol.facts_from_dict, protocol.desired_from_dict],
)  # fmt: skip
def test_a_newer_schema_is_refused_in_one_line_not_guessed_at(read: Any) -> None:
    with pytest.raises(SchemaTooNew) as caught:
        read({"schema": 2, "status": "succeeded", "app": "x", "future": "field"})
    message = str(caught.value)
    assert "schema 2" in message and "upgrade mlfleet" in message and "\n" not in message


@pytest.mark.parametrize(
    "data",
    [None, [], "text", {"status": "succeeded"}, {"schema": "1"}, {"schema": 1, "status": "exploded", "app": "x"},
     {"schema": 1, "status": "failed"}, {"schema": 1, "status": "failed", "app": "x", "logs": "not a list"}],
)  # fmt: skip
def test_malformed_results_are_protocol_errors(data: Any) -> None:
    with pytest.raises(ProtocolError):
        ApplyResult.from_dict(data)


def test_an_app_says_its_health_in_one_word() -> None:
    current = ReleaseView(1, "v3", "cpu", None, None, None, ReleaseStatus.CURRENT, "1", 1.0)
    assert AppStatus("a").health is Health.NOTHING
    assert AppStatus("a", current, running=True, healthy=True).health is Health.HEALTHY
    assert AppStatus("a", current, running=True, healthy=False).health is Health.RUNNING
    assert AppStatus("a", current, running=False, healthy=False).health is Health.DOWN


def test_only_ok_statuses_are_ok() -> None:
    assert {s for s in ApplyStatus if s.ok} == {ApplyStatus.SUCCEEDED, ApplyStatus.UNCHANGED}


def test_the_desired_state_knows_every_strategy_the_protocol_names() -> None:
    assert set(STRATEGIES) == {s.value for s in Strategy}


# --- the command line ---------------------------------------------------------------------

PLACES = [
    AgentPlace("/var/lib/mlfleet"),
    AgentPlace(
        "/opt/agent dir", root="/host", device_root="/host", docker_host="unix:///run/d.sock"
    ),
]


def parse(args: List[str]) -> Any:
    return build_parser().parse_args(args)


@pytest.mark.parametrize("place", PLACES)
def test_every_command_line_the_controller_builds_is_the_agents(place: AgentPlace) -> None:
    docker_host: Optional[str] = place.docker_host
    detect = parse(protocol.detect_args(place))
    assert (detect.command, detect.json, detect.root, detect.docker_host) == (
        "detect",
        True,
        place.root,
        docker_host,
    )
    select = parse(protocol.select_args(place))
    assert (select.command, select.variants, select.json) == ("select", "-", True)
    apply = parse(protocol.apply_args(place, pull_via="127.0.0.1:41234"))
    assert (apply.command, apply.file, apply.pull_via) == ("apply", "-", "127.0.0.1:41234")
    assert (apply.agent_dir, apply.root, apply.device_root, apply.docker_host) == (
        place.agent_dir, place.root, place.device_root, docker_host,
    )  # fmt: skip
    assert parse(protocol.apply_args(place)).pull_via is None
    rollback = parse(protocol.rollback_args(place, "sentiment", "v2"))
    assert (rollback.command, rollback.app, rollback.to, rollback.agent_dir) == (
        "rollback",
        "sentiment",
        "v2",
        place.agent_dir,
    )
    assert parse(protocol.rollback_args(place, "sentiment")).to is None
    status = parse(protocol.status_args(place))
    assert (status.command, status.json, status.agent_dir) == ("status", True, place.agent_dir)
    tick = parse(protocol.tick_args(place))
    assert (tick.command, tick.agent_dir, tick.root) == ("tick", place.agent_dir, place.root)
    daemon = parse(protocol.daemon_args(place, 5, for_s=60))
    assert (daemon.command, daemon.interval, daemon.for_s, daemon.agent_dir) == (
        "daemon", 5.0, 60.0, place.agent_dir,
    )  # fmt: skip
    assert parse(protocol.daemon_args(place, 30)).for_s is None
    version = parse(protocol.version_args())
    assert (version.command, version.json) == ("version", True)


def _sample(tmp_path: Any) -> Dict[str, Any]:
    from mlfleet.controller.lab.model_data import write_model
    from mlfleet.controller.lab.sample_release import sentiment_desired

    write_model(tmp_path)
    return sentiment_desired("reg.example:5000", str(tmp_path), "v3")


def test_an_apply_request_carries_the_credential_and_never_shows_it(tmp_path: Any) -> None:
    from mlfleet.agent.credential import RegistryCredential

    desired = protocol.desired_from_dict(_sample(tmp_path))
    credential = RegistryCredential("reg.example:5000", "robot", "hunter2-secret")
    request = protocol.ApplyRequest(desired, credential, store_credential=True)
    back = protocol.ApplyRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert back == request
    assert "hunter2-secret" not in repr(request)
    # A desired state alone (an operator's `mlfleet-agent apply desired.json`) still reads.
    bare = protocol.ApplyRequest.from_dict(desired.to_dict())
    assert bare.desired == desired and bare.credential is None and not bare.store_credential


@pytest.mark.parametrize(
    "credential, said",
    [
        ({"serveraddress": "r:5000", "username": "u"}, "neither a password nor a token"),
        ({"serveraddress": "r:5000", "password": 5}, "`password` must be a string"),
        ([], "must be a JSON object"),
    ],
)
def test_a_malformed_credential_is_a_protocol_error_without_the_secret(
    credential: Any, said: str, tmp_path: Any
) -> None:
    data = {"schema": 1, "desired": _sample(tmp_path), "credential": credential}
    with pytest.raises(ProtocolError, match=said):
        protocol.ApplyRequest.from_dict(data)
