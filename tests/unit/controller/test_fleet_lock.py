"""The fleet lock kept on the hosts: its scripts run for real (`sh`, `mkdir`, `mv`) on
this machine's filesystem, each "host" an agent directory under tmp_path, through a
transport that runs the argv locally instead of over SSH."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import pytest

from mlfleet.controller import fleet_lock
from mlfleet.controller.fleet_lock import FleetLock, FleetLockHeld, Holder
from mlfleet.controller.hosts import Host
from mlfleet.controller.transport import CommandResult, HostUnreachable


class LocalTransport:
    """Runs argv here (no shell added: the argv is what SSH would have quoted)."""

    def __init__(self, host: Host):
        self.host = host

    def run(self, argv: Sequence[str], *, stdin: Optional[bytes] = None, timeout: float = 600.0,
            on_stderr_line: Optional[Callable[[str], None]] = None) -> CommandResult:  # fmt: skip
        if self.host.vars.get("down"):
            raise HostUnreachable("Unable to connect to port 22", where=self.host.name)
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout)
        return CommandResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def each(fn: Callable[[Host], Any], hosts: Sequence[Host]) -> Dict[str, Any]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([h.name for h in hosts], pool.map(fn, hosts)))


def fleet(tmp_path: Path, n: int = 3, **extra: Any) -> List[Host]:
    return [
        Host(f"h{i}", {"mlfleet_agent_dir": str(tmp_path / f"h{i}" / "agent"), **extra})
        for i in range(1, n + 1)
    ]


def lock(hosts: List[Host], reason: str = "deploy sentiment v3", clock=time.time) -> FleetLock:
    return FleetLock(LocalTransport, each, hosts, reason, clock=clock)


def holder_on(host: Host) -> Optional[Holder]:
    found = fleet_lock.show(LocalTransport(host))
    return found.holder if found else None


def test_taken_on_every_host_then_given_back(tmp_path: Path) -> None:
    hosts = fleet(tmp_path)
    mine = lock(hosts)
    mine.acquire()
    assert sorted(mine.taken) == ["h1", "h2", "h3"]
    for host in hosts:
        found = holder_on(host)
        assert found is not None and found.reason == "deploy sentiment v3"
        assert found.token == mine.me.token and found.pid == os.getpid()
        # Private to the agent's user, like the rest of its directory.
        where = Path(fleet_lock.lock_dir(host))
        assert stat.S_IMODE(where.stat().st_mode) == 0o700
        assert stat.S_IMODE((where / "holder.json").stat().st_mode) == 0o600
    mine.release()
    assert all(holder_on(h) is None for h in hosts)
    assert not any(Path(fleet_lock.lock_dir(h)).exists() for h in hosts)


def test_a_second_operator_is_refused_with_the_holders_name_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    hosts = fleet(tmp_path)
    first = lock(hosts[:2], "deploy sentiment v3")  # h1, h2
    first.acquire()
    second = lock(hosts, "deploy sentiment v4")  # overlaps on h1 and h2
    with pytest.raises(FleetLockHeld) as raised:
        second.acquire()
    said = str(raised.value)
    assert said.startswith("the fleet lock on h1 (and on 1 more host) is held by ")
    assert first.me.describe() in said and "deploy sentiment v3" in said
    assert raised.value.exit_code == 4
    # The second gave back h3, which it had taken; the first still holds h1 and h2.
    assert holder_on(hosts[2]) is None
    assert [holder_on(h).token for h in hosts[:2]] == [first.me.token] * 2  # type: ignore[union-attr]


def test_two_controllers_racing_for_the_same_hosts_never_both_win(tmp_path: Path) -> None:
    hosts = fleet(tmp_path, 6)
    for _ in range(5):
        a, b = lock(hosts, "a"), lock(hosts, "b")
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(_try, [a, b]))
        assert outcomes.count(True) <= 1, outcomes
        for won, who in zip(outcomes, (a, b)):
            if won:
                assert {holder_on(h).token for h in hosts} == {who.me.token}  # type: ignore[union-attr]
                who.release()
        assert all(holder_on(h) is None for h in hosts)


def _try(mine: FleetLock) -> bool:
    try:
        mine.acquire()
    except FleetLockHeld:
        return False
    return True


def test_a_lock_whose_lease_ran_out_is_taken_over(tmp_path: Path) -> None:
    hosts = fleet(tmp_path, 2)
    dead = lock(hosts, "deploy sentiment v2", clock=lambda: time.time() - 2 * fleet_lock.LEASE_S)
    dead.acquire()  # its controller died: never released, never renewed
    mine = lock(hosts)
    mine.acquire()
    assert sorted(mine.taken) == ["h1", "h2"]
    assert {holder_on(h).token for h in hosts} == {mine.me.token}  # type: ignore[union-attr]


def test_two_controllers_taking_over_one_stale_lock_never_both_win(tmp_path: Path) -> None:
    hosts = fleet(tmp_path, 4)
    for _ in range(5):
        dead = lock(hosts, "dead", clock=lambda: time.time() - 2 * fleet_lock.LEASE_S)
        dead.acquire()
        a, b = lock(hosts, "a"), lock(hosts, "b")
        with ThreadPoolExecutor(max_workers=2) as pool:
            outcomes = list(pool.map(_try, [a, b]))
        assert outcomes.count(True) <= 1, outcomes
        for h in hosts:
            fleet_lock.release(LocalTransport(h), "")


def test_renewal_extends_the_lease_and_only_for_its_holder(tmp_path: Path) -> None:
    hosts = fleet(tmp_path, 2)
    now = [time.time()]
    mine = lock(hosts, clock=lambda: now[0])
    mine.acquire()
    before = holder_on(hosts[0])
    assert before is not None
    now[0] += fleet_lock.RENEW_EVERY_S + 1
    mine.renew_if_due()
    after = holder_on(hosts[0])
    assert after is not None and after.expires == pytest.approx(
        before.expires + fleet_lock.RENEW_EVERY_S + 1
    )
    # Someone released it by hand and another took h2: the renewal does not take it back.
    fleet_lock.release(LocalTransport(hosts[1]), "")
    other = lock([hosts[1]], "deploy other")
    other.acquire()
    now[0] += fleet_lock.RENEW_EVERY_S + 1
    mine.renew_if_due()
    assert holder_on(hosts[1]).token == other.me.token  # type: ignore[union-attr]


def test_an_unreachable_host_is_noted_and_does_not_stop_the_others(tmp_path: Path) -> None:
    down = Host("h3", {"mlfleet_agent_dir": str(tmp_path / "h3"), "down": True})
    hosts = [*fleet(tmp_path, 2), down]
    mine = lock(hosts)
    mine.acquire()
    assert sorted(mine.taken) == ["h1", "h2"]
    assert "Unable to connect" in mine.unreachable["h3"]


def test_a_damaged_or_half_written_lock_counts_as_held(tmp_path: Path) -> None:
    (host,) = fleet(tmp_path, 1)
    where = Path(fleet_lock.lock_dir(host))
    where.mkdir(parents=True)  # another controller between its mkdir and its holder.json
    with pytest.raises(FleetLockHeld, match="being taken or unreadable"):
        lock([host]).acquire()
    assert where.is_dir()  # not removed: it is not ours
    (where / "holder.json").write_text("{not json")
    with pytest.raises(FleetLockHeld):
        lock([host]).acquire()


@pytest.mark.parametrize(
    "reason",
    ['deploy "quoted" $(touch /tmp/x) `id` ; rm -rf /', "multi\nline", "%s %n \\x1b[2J"],
)
def test_any_reason_and_path_travel_as_data(tmp_path: Path, reason: str) -> None:
    odd = tmp_path / "a dir; with 'quotes' and $HOME"
    host = Host("h1", {"mlfleet_agent_dir": str(odd / "agent")})
    mine = lock([host], reason)
    mine.acquire()
    found = holder_on(host)
    assert found is not None and found.reason == reason
    assert (
        json.loads((Path(fleet_lock.lock_dir(host)) / "holder.json").read_text())["reason"]
        == reason
    )
    mine.release()
    assert not Path(fleet_lock.lock_dir(host)).exists()


def test_release_by_another_token_leaves_it(tmp_path: Path) -> None:
    (host,) = fleet(tmp_path, 1)
    mine = lock([host])
    mine.acquire()
    assert fleet_lock.release(LocalTransport(host), "0" * 32) is False
    assert holder_on(host) is not None
    assert fleet_lock.release(LocalTransport(host), "") is True  # `mlfleet lock release`
    assert holder_on(host) is None


def test_holder_from_text_refuses_what_is_not_a_holder() -> None:
    good = Holder("ab" * 16, "ann", "laptop", 42, 1.0, 2.0, "deploy x v1")
    assert Holder.from_text(good.to_json()) == good
    for text in ("", "null", "[]", '{"token": 1}', good.to_json().replace("ab", "zz"), "{"):
        assert Holder.from_text(text) is None, text


class _Session:
    """What `mlfleet lock status|release` use of a FleetSession."""

    def __init__(self, hosts: List[Host]):
        self.hosts = hosts

    def transport(self, host: Host) -> LocalTransport:
        return LocalTransport(host)

    def each(
        self, fn: Callable[[Host], Any], hosts: Optional[Sequence[Host]] = None
    ) -> Dict[str, Any]:
        return each(fn, list(hosts if hosts is not None else self.hosts))


def test_lock_status_and_release_read_the_hosts(tmp_path: Path) -> None:
    from mlfleet.controller.commands import fleet_lock_release, fleet_lock_status

    hosts = fleet(tmp_path, 3)
    hosts[2] = Host("h3", {"mlfleet_agent_dir": str(tmp_path / "h3"), "down": True})
    theirs = lock(hosts[:1], "deploy sentiment v9")
    theirs.acquire()
    session = _Session(hosts)
    rows = {r["host"]: r for r in fleet_lock_status(session)}  # type: ignore[arg-type]
    assert (
        rows["h1"]["holder"]["reason"] == "deploy sentiment v9"
        and not rows["h1"]["holder"]["stale"]
    )
    assert rows["h2"] == {"host": "h2", "holder": None, "error": None}
    assert rows["h3"]["holder"] is None and "Unable to connect" in rows["h3"]["error"]
    assert fleet_lock_release(session) == ["h1"]  # type: ignore[arg-type]
    assert all(r["holder"] is None for r in fleet_lock_status(session))  # type: ignore[arg-type]


def test_a_lock_of_a_controller_killed_on_this_machine_is_taken_over_at_once(
    tmp_path: Path,
) -> None:
    hosts = fleet(tmp_path, 2)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that was this machine's controller and is no more
    dead = lock(hosts, "deploy sentiment v1")
    dead.me = Holder(**{**dead.me.__dict__, "pid": gone.pid})
    dead.acquire()
    mine = lock(hosts)
    mine.acquire()
    assert sorted(mine.took_over) == ["h1", "h2"] and sorted(mine.taken) == ["h1", "h2"]
    # Another machine's live-looking holder is not: only its lease decides.
    elsewhere = Holder("cd" * 16, "bob", "not-" + socket.gethostname(), gone.pid, time.time(),
                       time.time() + 60, "deploy x")  # fmt: skip
    assert not elsewhere.stale(time.time())
