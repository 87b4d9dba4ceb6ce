"""The controller's state DB takes writes from the deployment's worker threads at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlfleet.controller.state import ControllerState


def test_concurrent_writes_from_threads(tmp_path: Path) -> None:
    state = ControllerState(tmp_path / "state.db")
    deployment = state.start_deployment(
        app="a", tag="v1", playbook="p", inventory="i", hosts=100, policy=""
    )

    def one(i: int) -> None:
        state.save_facts(f"h{i}", {"i": i})
        state.record_host(deployment, f"h{i}", "canary", {"result": "updated"})
        state.event("wave", f"h{i}", deployment, f"h{i}")

    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(one, range(200)))
    assert len(state.host_results(deployment_id=deployment, limit=500)) == 200
    assert state.facts("h199") == {"i": 199}


def test_a_fleets_facts_are_saved_in_one_transaction(tmp_path) -> None:
    state = ControllerState(tmp_path / "state.db")
    commits = []
    state.db.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    state.save_facts_of({f"h{i}": {"i": i} for i in range(500)})
    state.db.conn.set_trace_callback(None)
    assert len(commits) == 1
    assert state.facts("h499") == {"i": 499} and state.facts("h0") == {"i": 0}
