"""Health checks: compare_json (pure), and the waiting logic of wait_healthy/monitor against a
real HTTP server on 127.0.0.1, a fake engine and a fake clock (no real waiting)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from mlfleet.agent.desired import (
    ExecCheck,
    HealthSpec,
    HttpCheck,
    InferenceCheck,
    TcpCheck,
    Timing,
)
from mlfleet.agent.engine_api import EngineUnreachable
from mlfleet.agent.health import (
    EVIDENCE_LINES,
    Target,
    compare_json,
    monitor,
    probe_once,
    wait_healthy,
)
from mlfleet.agent.protocol import Event, EventKind

CONTAINER_PORT = 8080

# --- compare_json --------------------------------------------------------------------------


ANSWER = {
    "model": "sentiment",
    "version": 3,
    "predictions": [
        {"label": "positive", "score": 0.93, "ok": True},
        {"label": "negative", "score": 0.41, "ok": False, "extra": [1, 2]},
    ],
    "meta": {"runtime": {"device": "cuda:0", "ms": 12.5}, "content-type": "json"},
    "tag": None,
}


def test_compare_equal_and_subset() -> None:
    assert compare_json(ANSWER, json.loads(json.dumps(ANSWER)), 0.0) is None
    # Extra keys in the answer are allowed, at every depth.
    expected = {"predictions": [{"label": "positive"}, {"score": 0.41}], "meta": {"runtime": {}}}
    assert compare_json(expected, ANSWER, 0.0) is None
    assert compare_json({}, ANSWER, 0.0) is None


def test_compare_names_the_path() -> None:
    expected: Dict[str, Any] = {"predictions": [{"score": 0.93}, {"score": 0.93}]}
    assert compare_json(expected, ANSWER, 0.001) == (
        "$.predictions[1].score: 0.41 differs from expected 0.93 by 0.52 (tolerance 0.001)"
    )
    expected = {"predictions": [{"label": "positive"}, {"label": "positive"}]}
    assert compare_json(expected, ANSWER, 0.001) == (
        "$.predictions[1].label: 'negative' != expected 'positive'"
    )
    assert compare_json({"meta": {"runtime": {"device": "cpu"}}}, ANSWER, 0) == (
        "$.meta.runtime.device: 'cuda:0' != expected 'cpu'"
    )
    # Keys that are not identifiers are quoted.
    assert compare_json({"meta": {"content-type": "xml"}}, ANSWER, 0) == (
        "$.meta[\"content-type\"]: 'json' != expected 'xml'"
    )
    assert compare_json([{"a": 1}], [{"a": 2}], 0, path="answer") == (
        "answer[0].a: 2 differs from expected 1 by 1 (tolerance 0)"
    )


def test_compare_missing_keys() -> None:
    assert compare_json({"tag": None, "labels": []}, ANSWER, 0) == "$.labels: missing"
    assert compare_json({"predictions": [{}, {"rank": 2}]}, ANSWER, 0) == (
        "$.predictions[1].rank: missing"
    )
    # A key present with null is not missing, and null matches only null.
    assert compare_json({"tag": None}, ANSWER, 0) is None
    assert compare_json({"tag": None}, {"tag": 0}, 0) == "$.tag: 0 != expected None"
    assert compare_json({"tag": 0}, {"tag": None}, 0) == (
        "$.tag: None is not a number (expected 0)"
    )


def test_compare_list_length_and_types() -> None:
    assert compare_json([1, 2], [1, 2, 3], 0) == "$: 3 items, expected 2"
    assert compare_json({"p": [1, 2, 3]}, {"p": [1, 2]}, 0) == "$.p: 2 items, expected 3"
    assert compare_json([], [], 0) is None
    assert compare_json({"p": [1]}, {"p": {"0": 1}}, 0) == (
        '$.p: expected an array, got an object {"0": 1}'
    )
    assert compare_json({"p": {}}, {"p": [1]}, 0) == "$.p: expected an object, got an array [1]"
    assert compare_json({"p": {}}, {"p": None}, 0) == "$.p: expected an object, got null"
    assert compare_json({"p": {"q": 1}}, "text", 0) == (
        "$: expected an object, got a string 'text'"
    )
    assert compare_json("1", 1, 0) == "$: 1 != expected '1'"
    assert compare_json(1, "1", 0) == "$: '1' is not a number (expected 1)"


@pytest.mark.parametrize(
    "expected, actual, tolerance, ok",
    [
        (1.0, 1.5, 0.5, True),  # the boundary is inclusive
        (1.0, 0.5, 0.5, True),
        (1.0, 1.5000001, 0.5, False),
        (1.0, 0.4999999, 0.5, False),
        (0.93, 0.929, 0.001, True),  # 0.0010000000000000009 apart in floats: still at the edge
        (0.93, 0.931, 0.001, True),
        (0.93, 0.9289, 0.001, False),
        (0.93, 0.93, 0.0, True),
        (0.93, 0.9300001, 0.0, False),
        (3, 3.0, 0.0, True),  # int and float are both numbers
        (3, 4, 0.0, False),
        (3, 4, 1.0, True),
        (10**20, 10**20 + 1, 0.0, False),  # big ints are compared exactly
        (-2.5, -2.4, 0.2, True),
        (float("inf"), float("inf"), 0.0, True),
        (float("inf"), 1e308, 1e300, False),
        (float("nan"), float("nan"), 0.0, True),
        (1.0, float("nan"), 10.0, False),
        (1.0, float("inf"), 10.0, False),
    ],
)
def test_compare_tolerance(expected: float, actual: float, tolerance: float, ok: bool) -> None:
    result = compare_json({"v": expected}, {"v": actual}, tolerance)
    assert (result is None) == ok, result
    if not ok:
        assert result is not None  # as asserted above; for the type checker
        assert result.startswith("$.v: ")
        assert "differs from expected" in result
        assert f"(tolerance {tolerance:g})" in result


def test_compare_diff_at_the_boundary_is_not_shown_as_the_tolerance() -> None:
    # 1.5000001 - 1.0 would print as 0.5 with 6 digits: the full value shows why it failed.
    result = compare_json(1.0, 1.5000001, 0.5)
    assert result == "$: 1.5000001 differs from expected 1.0 by 0.5000001 (tolerance 0.5)"


def test_compare_bools_are_not_numbers() -> None:
    assert compare_json(1, True, 0) == "$: True is not a number (expected 1)"
    assert compare_json(0, False, 1.0) == "$: False is not a number (expected 0)"
    assert compare_json(True, 1, 0) == "$: 1 != expected True"
    assert compare_json(False, 0, 0) == "$: 0 != expected False"
    assert compare_json(True, 1.0, 1.0) == "$: 1.0 != expected True"
    assert compare_json(True, True, 0) is None
    assert compare_json({"predictions": [{"ok": False}]}, {"predictions": [{"ok": True}]}, 0) == (
        "$.predictions[0].ok: True != expected False"
    )


def test_compare_reports_the_first_difference_only() -> None:
    result = compare_json({"a": 1, "b": 2}, {"a": 9, "b": 9}, 0)
    assert result == "$.a: 9 differs from expected 1 by 8 (tolerance 0)"


# --- fakes: clock, engine, a real HTTP server ----------------------------------------------


class FakeClock:
    """time.monotonic and time.sleep in one: sleeping advances the clock, instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: List[float] = []

    def __call__(self) -> float:
        return self.now

    def elapsed(self) -> float:
        return self.now - 1000.0

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class FakeEngine:
    """container_inspect and exec_run; `script(engine, t)` may change the state before each
    inspect (t: seconds on the fake clock since the test began)."""

    def __init__(
        self, clock: FakeClock, script: Optional[Callable[[FakeEngine, float], None]] = None
    ):
        self.clock = clock
        self.script = script
        self.state: Dict[str, Any] = {"Status": "running", "Running": True, "ExitCode": 0}
        self.gone = False
        self.unreachable = False
        self.exec_result: Tuple[int, str] = (0, "ok\n")
        self.exec_calls: List[Tuple[str, List[str], float]] = []
        # Set: exec_run answers only once it is released (a command that hangs).
        self.exec_hangs: Optional[threading.Event] = None
        self.inspects = 0

    def container_inspect(self, container_id: str) -> Optional[Dict[str, Any]]:
        assert container_id == "c0ffee"
        self.inspects += 1
        if self.script:
            self.script(self, self.clock.elapsed())
        if self.unreachable:
            raise EngineUnreachable("Docker engine at unix:///var/run/docker.sock did not answer")
        if self.gone:
            return None
        return {"Id": container_id, "State": dict(self.state), "Config": {}}

    def exec_run(self, container_id: str, command: List[str], timeout: float) -> Tuple[int, str]:
        self.exec_calls.append((container_id, command, timeout))
        if self.exec_hangs is not None:
            self.exec_hangs.wait(10)
        return self.exec_result

    def exit(self, code: int, oom: bool = False) -> None:
        self.state = {"Status": "exited", "Running": False, "ExitCode": code, "OOMKilled": oom}

    def health(self, status: str, output: str = "", code: int = 0) -> None:
        log = [{"ExitCode": code, "Output": output}] if output else []
        self.state["Health"] = {"Status": status, "FailingStreak": 0, "Log": log}


Answer = Tuple[int, Any]  # status, body (bytes, str, or JSON-able)


class Server:
    """A real HTTP server on 127.0.0.1 whose answers the test decides: `answer(request)`
    gets a dict (method, path, n: requests so far, 1-based, body, content_type)."""

    def __init__(self) -> None:
        self.requests: List[Dict[str, Any]] = []
        self.answer: Callable[[Dict[str, Any]], Answer] = lambda r: (200, "ok")
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                with server.lock:
                    request = {
                        "method": self.command,
                        "path": self.path,
                        "body": self.rfile.read(length) if length else b"",
                        "content_type": self.headers.get("Content-Type"),
                        "n": len(server.requests) + 1,
                    }
                    server.requests.append(request)
                    status, body = server.answer(request)
                if isinstance(body, str):
                    data = body.encode()
                elif isinstance(body, bytes):
                    data = body
                else:
                    data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            # A short poll interval: shutdown() waits for the loop to notice.
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            daemon=True,
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def target(engine: FakeEngine, port: int, docker: bool = False) -> Target:
    return Target(engine, "c0ffee", "127.0.0.1", {CONTAINER_PORT: port}, docker)


def spec(
    http: bool = True,
    start_period: float = 5.0,
    retries: int = 3,
    deadline: float = 60.0,
    interval: float = 1.0,
    **checks: Any,
) -> HealthSpec:
    return HealthSpec(
        http=[HttpCheck(port=CONTAINER_PORT)] if http else [],
        timing=Timing(
            start_period_s=start_period,
            interval_s=interval,
            timeout_s=2.0,
            retries=retries,
            deadline_s=deadline,
        ),
        **checks,
    )


def fail_first(n: int, status: int = 503) -> Callable[[Dict[str, Any]], Answer]:
    return lambda r: (status, "model loading") if r["n"] <= n else (200, "ok")


def run_wait(t: Target, s: HealthSpec, clock: FakeClock) -> Tuple[Any, List[Event]]:
    events: List[Event] = []
    verdict = wait_healthy(t, s, emit=events.append, clock=clock, sleep=clock.sleep)
    return verdict, events


def run_monitor(
    t: Target, s: HealthSpec, clock: FakeClock, window: float
) -> Tuple[Any, List[Event]]:
    events: List[Event] = []
    verdict = monitor(t, s, window, emit=events.append, clock=clock, sleep=clock.sleep)
    return verdict, events


# --- probe_once ----------------------------------------------------------------------------


def test_probe_once_every_check(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(clock)
    engine.health("healthy", "ok\n")
    server.answer = lambda r: (200, {"label": "positive", "score": 0.9})
    s = spec(
        tcp=[TcpCheck(port=CONTAINER_PORT)],
        exec=[ExecCheck(command=["python3", "-c", "import urllib.request; print('long command')"])],
        inference=[
            InferenceCheck(
                port=CONTAINER_PORT,
                path="/predict",
                request={"text": "hi"},
                expect={"label": "positive"},
            )
        ],
    )
    probes = probe_once(target(engine, server.port, docker=True), s)
    assert [(p.check, p.ok) for p in probes] == [
        ("container", True),
        ("docker HEALTHCHECK", True),
        ("http :8080/health", True),
        ("tcp :8080", True),
        ("exec python3 -c 'import urllib.request; pr...", True),
        ("inference :8080/predict", True),
    ]
    assert [p.detail for p in probes][:4] == ["running", "healthy", "HTTP 200", "connected"]
    # The engine's socket waits a little longer than the check: the check's deadline tells.
    assert engine.exec_calls == [("c0ffee", s.exec[0].command, 3.0)]
    post = server.requests[-1]
    assert (post["method"], post["path"], post["content_type"]) == (
        "POST",
        "/predict",
        "application/json",
    )
    assert json.loads(post["body"]) == {"text": "hi"}


def test_probe_details(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(clock)
    engine.exec_result = (3, "checking\nmodel file /models/m.onnx missing\n\n")
    server.answer = lambda r: (
        (503, "  model\n loading ") if r["path"] == "/health" else (200, "warming up")
    )
    s = spec(
        http=False,
        tcp=[TcpCheck(port=CONTAINER_PORT), TcpCheck(port=9000)],
        exec=[ExecCheck(command=["/bin/check"])],
    )
    s.http = [
        HttpCheck(port=CONTAINER_PORT),
        HttpCheck(port=CONTAINER_PORT, path="/ready", body_contains="ready"),
        HttpCheck(port=9000),
    ]
    probes = probe_once(target(engine, server.port), s)
    details = {p.check: (p.ok, p.detail) for p in probes}
    assert details == {
        "container": (True, "running"),
        "http :8080/health": (False, "HTTP 503 (wanted 200): model loading"),
        "http :8080/ready": (False, "HTTP 200 but the body does not contain 'ready': warming up"),
        "http :9000/health": (
            False,
            f"container port 9000 is not published on the host (published: 8080->{server.port})",
        ),
        "tcp :8080": (True, "connected"),
        "tcp :9000": (
            False,
            f"container port 9000 is not published on the host (published: 8080->{server.port})",
        ),
        "exec /bin/check": (False, "exit 3: model file /models/m.onnx missing"),
    }


def test_an_exec_check_that_hangs_fails_at_its_timeout(clock: FakeClock) -> None:
    engine = FakeEngine(clock)
    engine.exec_hangs = threading.Event()
    s = spec(http=False, exec=[ExecCheck(command=["/bin/check"])])
    s.timing.timeout_s = 0.2
    try:
        began = time.monotonic()
        probes = probe_once(target(engine, closed_port()), s)
        took = time.monotonic() - began
    finally:
        engine.exec_hangs.set()
    assert [(p.check, p.ok, p.detail) for p in probes] == [
        ("container", True, "running"),
        ("exec /bin/check", False, "did not finish within 0.2s (timeout_s): the command hangs"),
    ]
    assert 0.2 <= took < 2.0


def test_a_hung_exec_check_fails_the_wait_with_its_reason(clock: FakeClock) -> None:
    engine = FakeEngine(clock)
    engine.exec_hangs = threading.Event()
    s = spec(http=False, start_period=0, retries=1, exec=[ExecCheck(command=["/bin/check"])])
    s.timing.timeout_s = 0.1
    try:
        verdict, _ = run_wait(target(engine, closed_port()), s, clock)
    finally:
        engine.exec_hangs.set()
    assert not verdict.ok
    assert verdict.reason.endswith(
        "last: exec /bin/check: did not finish within 0.1s (timeout_s): the command hangs"
    )


def test_probe_connection_refused(clock: FakeClock) -> None:
    s = spec(tcp=[TcpCheck(port=CONTAINER_PORT)])
    s.inference = [InferenceCheck(port=CONTAINER_PORT, path="/predict", request={}, expect={})]
    probes = probe_once(target(FakeEngine(clock), closed_port()), s)
    assert [(p.check, p.ok, p.detail) for p in probes[1:]] == [
        ("http :8080/health", False, "connection refused"),
        ("tcp :8080", False, "connection refused"),
        ("inference :8080/predict", False, "connection refused"),
    ]


def test_probe_timeout(server: Server, clock: FakeClock) -> None:
    def slow(r: Dict[str, Any]) -> Answer:
        time.sleep(0.6)
        return 200, "late"

    server.answer = slow
    s = spec()
    s.timing.timeout_s = 0.2
    began = time.monotonic()
    probes = probe_once(target(FakeEngine(clock), server.port), s)
    assert time.monotonic() - began < 0.5
    assert probes[1].detail == "no answer within 0.2s"


def test_probe_engine_unreachable_is_a_failed_probe(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(clock)
    engine.unreachable = True
    probes = probe_once(target(engine, server.port, docker=True), spec())
    assert [(p.check, p.ok) for p in probes] == [("container", False), ("http :8080/health", True)]
    assert probes[0].detail.startswith("Docker engine did not answer: ")


@pytest.mark.parametrize(
    "state, detail",
    [
        ({"Status": "exited", "Running": False, "ExitCode": 1}, "container exited with code 1"),
        (
            {"Status": "exited", "Running": False, "ExitCode": 137, "OOMKilled": True},
            "container exited with code 137 (killed: out of memory)",
        ),
        (
            {"Status": "restarting", "Running": True, "Restarting": True, "ExitCode": 2},
            "container exited with code 2 and is restarting",
        ),
        (
            {"Status": "created", "Running": False, "ExitCode": 0},
            "container was created but never started",
        ),
        (
            {"Status": "dead", "Running": False, "ExitCode": 128, "Error": "mount failed"},
            "container exited with code 128 (status dead): mount failed",
        ),
        (None, "container is gone (removed)"),
    ],
)
def test_probe_container_not_running_skips_the_rest(
    server: Server, clock: FakeClock, state: Optional[Dict[str, Any]], detail: str
) -> None:
    engine = FakeEngine(clock)
    engine.gone = state is None
    engine.state = state or {}
    probes = probe_once(target(engine, server.port, docker=True), spec())
    assert [(p.check, p.ok, p.detail) for p in probes] == [("container", False, detail)]
    assert server.requests == []


def test_probe_paused_container_is_a_failure_not_a_stop(clock: FakeClock) -> None:
    engine = FakeEngine(clock)
    engine.state["Paused"] = True
    probes = probe_once(target(engine, closed_port()), spec(http=False))
    assert [(p.check, p.ok, p.detail) for p in probes] == [
        ("container", False, "container is paused")
    ]
    verdict, _ = run_wait(target(engine, closed_port()), spec(http=False, start_period=0), clock)
    assert "3 failed rounds in a row" in verdict.reason


# --- wait_healthy --------------------------------------------------------------------------


def test_healthy_after_start_period_failures(server: Server, clock: FakeClock) -> None:
    server.answer = fail_first(4)
    verdict, events = run_wait(target(FakeEngine(clock), server.port), spec(), clock)
    assert verdict.ok
    assert verdict.seconds == 4.0
    assert [e.ok for e in events] == [False, False, False, False, True]
    assert events[0] == Event(
        EventKind.HEALTH, "http :8080/health: HTTP 503 (wanted 200): model loading", ok=False
    )
    assert verdict.evidence == [
        "0.0s-3.0s (4 rounds): http :8080/health: HTTP 503 (wanted 200): model loading"
        " (start period, not counted)",
        "healthy after 4.0s: all 2 checks passed",
    ]
    assert [p.ok for p in verdict.probes] == [True, True]
    assert clock.sleeps == [1.0] * 4


def test_failures_within_the_start_period_never_fail(server: Server, clock: FakeClock) -> None:
    # Failing for 9 rounds with retries 1 is fine while the start period (10s) lasts.
    server.answer = fail_first(10)
    verdict, _ = run_wait(
        target(FakeEngine(clock), server.port), spec(start_period=10, retries=1), clock
    )
    assert verdict.ok and verdict.seconds == 10.0


def test_retries_exhausted(server: Server, clock: FakeClock) -> None:
    server.answer = fail_first(1000)
    verdict, events = run_wait(
        target(FakeEngine(clock), server.port), spec(start_period=2, retries=3), clock
    )
    assert not verdict.ok
    # Rounds at 0 and 1 are in the start period; 2, 3 and 4 count.
    assert verdict.seconds == 4.0
    assert len(events) == 5
    assert verdict.evidence == [
        "0.0s-1.0s (2 rounds): http :8080/health: HTTP 503 (wanted 200): model loading"
        " (start period, not counted)",
        "2.0s-4.0s (3 rounds): http :8080/health: HTTP 503 (wanted 200): model loading",
        "unhealthy after 4.0s: 3 failed rounds in a row after the 2s start period; "
        "last: http :8080/health: HTTP 503 (wanted 200): model loading",
    ]
    assert verdict.reason == verdict.evidence[-1]
    assert verdict.probes[1].detail == "HTTP 503 (wanted 200): model loading"


def test_retries_count_only_failures_in_a_row(server: Server, clock: FakeClock) -> None:
    # Two failures, a round where only Docker's verdict is missing, two failures, healthy:
    # never three failed rounds in a row.
    engine = FakeEngine(clock, lambda e, t: e.health("healthy" if t >= 5 else "starting"))
    server.answer = lambda r: (200, "ok") if r["n"] in (3, 6) else (503, "busy")
    verdict, events = run_wait(
        target(engine, server.port, docker=True), spec(start_period=0, retries=3), clock
    )
    assert verdict.ok, verdict.evidence
    assert verdict.seconds == 5.0
    assert [e.ok for e in events] == [False] * 5 + [True]


def test_retries_zero_means_the_first_counted_failure_fails(
    server: Server, clock: FakeClock
) -> None:
    server.answer = fail_first(1000)
    verdict, _ = run_wait(
        target(FakeEngine(clock), server.port), spec(start_period=0, retries=0), clock
    )
    assert not verdict.ok and verdict.seconds == 0.0
    assert "1 failed rounds in a row" in verdict.reason


def test_deadline(server: Server, clock: FakeClock) -> None:
    server.answer = fail_first(1000)
    verdict, events = run_wait(
        target(FakeEngine(clock), server.port), spec(retries=1000, deadline=10), clock
    )
    assert not verdict.ok
    assert verdict.seconds == 10.0
    assert len(events) == 11  # rounds at 0..10
    assert verdict.reason.startswith("not healthy after 10s (deadline); last: http :8080/health")


def test_deadline_between_intervals(clock: FakeClock) -> None:
    # Connection refused, rounds at 0, 1.5, 3 and a last one at the deadline, 3.5.
    verdict, _ = run_wait(
        target(FakeEngine(clock), closed_port()),
        spec(start_period=100, interval=1.5, deadline=3.5),
        clock,
    )
    assert not verdict.ok
    assert verdict.seconds == 3.5
    assert clock.sleeps == [1.5, 1.5, 0.5]
    assert (
        verdict.reason
        == "not healthy after 3.5s (deadline); last: http :8080/health: connection refused"
    )


def test_container_exits_fails_at_once(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(clock, lambda e, t: e.exit(137, oom=True) if t >= 2 else None)
    server.answer = fail_first(1000)
    verdict, events = run_wait(
        target(engine, server.port), spec(start_period=30, retries=10), clock
    )
    assert not verdict.ok
    assert verdict.seconds == 2.0  # in the start period, and with retries left
    assert (
        verdict.reason
        == "failed after 2.0s: container exited with code 137 (killed: out of memory)"
    )
    assert events[-1] == Event(
        EventKind.HEALTH, "container exited with code 137 (killed: out of memory)", ok=False
    )
    assert [p.check for p in verdict.probes] == ["container"]
    assert len(server.requests) == 2


def test_container_exit_code_in_the_verdict(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(clock)
    engine.exit(1)
    verdict, _ = run_wait(target(engine, server.port), spec(), clock)
    assert not verdict.ok and verdict.seconds == 0.0
    assert verdict.evidence == ["failed after 0.0s: container exited with code 1"]


def test_docker_health_starting_then_healthy(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(clock, lambda e, t: e.health("healthy" if t >= 8 else "starting"))
    # Past our start period (2s) and retries (2): "starting" is no verdict yet, not a failure.
    verdict, _events = run_wait(
        target(engine, server.port, docker=True), spec(start_period=2, retries=2), clock
    )
    assert verdict.ok
    assert verdict.seconds == 8.0
    assert verdict.evidence == [
        "0.0s-7.0s (8 rounds): docker HEALTHCHECK: starting (no verdict yet)",
        "healthy after 8.0s: all 3 checks passed",
    ]
    assert [p.detail for p in verdict.probes] == ["running", "healthy", "HTTP 200"]


def test_docker_health_starting_is_bounded_by_the_deadline(
    server: Server, clock: FakeClock
) -> None:
    engine = FakeEngine(clock, lambda e, t: e.health("starting", "connection refused\n", 1))
    verdict, _ = run_wait(target(engine, server.port, docker=True), spec(deadline=20), clock)
    assert not verdict.ok and verdict.seconds == 20.0
    assert verdict.reason == (
        "not healthy after 20s (deadline); last: docker HEALTHCHECK: starting (no verdict yet); "
        "last check exited 1: connection refused"
    )


def test_docker_health_unhealthy_shows_the_log(server: Server, clock: FakeClock) -> None:
    output = "  % Total    % Received\ncurl: (7) Failed to connect to localhost port 8080\n"
    engine = FakeEngine(
        clock, lambda e, t: e.health("unhealthy", output, 7) if t >= 1 else e.health("starting")
    )
    verdict, _ = run_wait(
        target(engine, server.port, docker=True), spec(start_period=0, retries=2), clock
    )
    assert not verdict.ok
    assert verdict.seconds == 2.0
    line = (
        "docker HEALTHCHECK: unhealthy; last check exited 7: "
        "curl: (7) Failed to connect to localhost port 8080"
    )
    assert verdict.evidence == [
        "0.0s: docker HEALTHCHECK: starting (no verdict yet)",
        "1.0s-2.0s (2 rounds): " + line,
        "unhealthy after 2.0s: 2 failed rounds in a row after the 0s start period; last: " + line,
    ]


def test_docker_health_ignored_when_not_used(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(clock)
    engine.health("unhealthy", "boom", 1)
    verdict, _ = run_wait(target(engine, server.port, docker=False), spec(), clock)
    assert verdict.ok
    s = spec()
    s.docker = False
    verdict, _ = run_wait(target(engine, server.port, docker=True), s, clock)
    assert verdict.ok


def test_docker_health_missing(server: Server, clock: FakeClock) -> None:
    probes = probe_once(target(FakeEngine(clock), server.port, docker=True), spec())
    assert (probes[1].ok, probes[1].detail) == (
        False,
        "no health status: the image has no HEALTHCHECK",
    )


PREDICTION = {"predictions": [{"label": "positive", "score": 0.9305}], "model": "m1"}


def inference_spec(tolerance: float) -> HealthSpec:
    return spec(
        http=False,
        start_period=0,
        retries=2,
        inference=[
            InferenceCheck(
                port=CONTAINER_PORT,
                path="/predict",
                request={"texts": ["I love it"]},
                expect={"predictions": [{"label": "positive", "score": 0.93}]},
                tolerance=tolerance,
            )
        ],
    )


def test_inference_within_tolerance_passes(server: Server, clock: FakeClock) -> None:
    server.answer = lambda r: (200, PREDICTION)
    verdict, _ = run_wait(target(FakeEngine(clock), server.port), inference_spec(0.001), clock)
    assert verdict.ok, verdict.evidence
    assert verdict.probes[-1].detail == "answer matches (tolerance 0.001)"
    assert json.loads(server.requests[0]["body"]) == {"texts": ["I love it"]}
    assert server.requests[0]["content_type"] == "application/json"


def test_inference_beyond_tolerance_fails(server: Server, clock: FakeClock) -> None:
    server.answer = lambda r: (200, PREDICTION)
    verdict, _ = run_wait(target(FakeEngine(clock), server.port), inference_spec(0.0001), clock)
    assert not verdict.ok
    detail = (
        "$.predictions[0].score: 0.9305 differs from expected 0.93 by 0.0005 (tolerance 0.0001)"
    )
    assert verdict.probes[-1].detail == detail
    assert verdict.reason.endswith("last: inference :8080/predict: " + detail)


@pytest.mark.parametrize(
    "status, body, detail",
    [
        (500, "CUDA error: out of memory", "HTTP 500 (wanted 200): CUDA error: out of memory"),
        (200, "<html>hello</html>", "HTTP 200 but the answer is not JSON: <html>hello</html>"),
        (200, {"predictions": []}, "$.predictions: 0 items, expected 1"),
    ],
)
def test_inference_failures(
    server: Server, clock: FakeClock, status: int, body: Any, detail: str
) -> None:
    server.answer = lambda r: (status, body)
    probes = probe_once(target(FakeEngine(clock), server.port), inference_spec(0.001))
    assert (probes[-1].ok, probes[-1].detail) == (False, detail)


def test_evidence_is_bounded(server: Server, clock: FakeClock) -> None:
    # Every answer differs, so no two rounds share a line.
    server.answer = lambda r: (503, f"attempt {r['n']}")
    verdict, events = run_wait(
        target(FakeEngine(clock), server.port), spec(retries=1000, deadline=50), clock
    )
    assert len(events) == 51
    assert len(verdict.evidence) == EVIDENCE_LINES
    assert verdict.evidence[0] == "(33 earlier lines left out)"
    assert verdict.evidence[-2].startswith(
        "50.0s: http :8080/health: HTTP 503 (wanted 200): attempt 51"
    )
    assert verdict.evidence[-1].startswith("not healthy after 50s")


# --- monitor -------------------------------------------------------------------------------


def test_monitor_stable_window(server: Server, clock: FakeClock) -> None:
    verdict, events = run_monitor(target(FakeEngine(clock), server.port), spec(), clock, 10)
    assert verdict.ok
    assert verdict.seconds == 10.0
    assert len(events) == 10  # at 1..10: wait_healthy has just run the round at 0
    assert all(e.ok for e in events)
    assert verdict.evidence == [
        "1.0s-10.0s (10 rounds): all 2 checks passed",
        "stayed healthy for the 10s monitor window",
    ]


def test_monitor_window_not_a_multiple_of_the_interval(server: Server, clock: FakeClock) -> None:
    verdict, _events = run_monitor(
        target(FakeEngine(clock), server.port), spec(interval=2), clock, 5
    )
    assert verdict.ok and verdict.seconds == 5.0
    assert clock.sleeps == [2.0, 2.0, 1.0]


def test_monitor_fails_when_the_server_starts_failing(server: Server, clock: FakeClock) -> None:
    server.answer = lambda r: (200, "ok") if r["n"] <= 4 else (500, "worker died")
    verdict, events = run_monitor(
        target(FakeEngine(clock), server.port), spec(retries=3), clock, 30
    )
    assert not verdict.ok
    assert verdict.seconds == 7.0  # failing from the 5th round on; the 3rd failure is at 7s
    assert [e.ok for e in events] == [True] * 4 + [False] * 3
    assert verdict.evidence[-2:] == [
        "5.0s-7.0s (3 rounds): http :8080/health: HTTP 500 (wanted 200): worker died",
        "turned unhealthy 7.0s into the 30s monitor window: 3 failed rounds in a row; "
        "last: http :8080/health: HTTP 500 (wanted 200): worker died",
    ]


def test_monitor_tolerates_failures_not_in_a_row(server: Server, clock: FakeClock) -> None:
    # Every third request fails, and a pair fails in a row: never 3 in a row.
    server.answer = lambda r: (503, "busy") if r["n"] % 3 == 0 or r["n"] == 7 else (200, "ok")
    verdict, events = run_monitor(
        target(FakeEngine(clock), server.port), spec(retries=3), clock, 20
    )
    assert verdict.ok, verdict.evidence
    assert sum(1 for e in events if not e.ok) == 7


def test_monitor_follows_a_failing_run_past_the_window(server: Server, clock: FakeClock) -> None:
    # Failing from the window's last round on: the run is followed until it reaches retries.
    server.answer = lambda r: (200, "ok") if r["n"] < 10 else (503, "down")
    verdict, _events = run_monitor(
        target(FakeEngine(clock), server.port), spec(retries=3), clock, 10
    )
    assert not verdict.ok
    assert verdict.seconds == 12.0
    # And a run that recovers after the window is ok.
    clock2 = FakeClock()
    server.requests.clear()
    server.answer = lambda r: (503, "blip") if r["n"] == 10 else (200, "ok")
    verdict, _ = run_monitor(target(FakeEngine(clock2), server.port), spec(retries=3), clock2, 10)
    assert verdict.ok and verdict.seconds == 11.0


def test_monitor_fails_when_the_container_stops(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(clock, lambda e, t: e.exit(139) if t >= 4 else None)
    verdict, events = run_monitor(target(engine, server.port), spec(retries=3), clock, 30)
    assert not verdict.ok
    assert verdict.seconds == 4.0
    assert (
        verdict.reason == "failed 4.0s into the 30s monitor window: container exited with code 139"
    )
    assert events[-1].message == "container exited with code 139"


def test_monitor_fails_when_docker_turns_unhealthy(server: Server, clock: FakeClock) -> None:
    engine = FakeEngine(
        clock,
        lambda e, t: (
            e.health("unhealthy", "model not loaded\n", 1) if t >= 3 else e.health("healthy")
        ),
    )
    verdict, _ = run_monitor(target(engine, server.port, docker=True), spec(retries=2), clock, 30)
    assert not verdict.ok and verdict.seconds == 4.0
    assert "last check exited 1: model not loaded" in verdict.reason


def test_monitor_without_a_window(server: Server, clock: FakeClock) -> None:
    verdict, events = run_monitor(target(FakeEngine(clock), server.port), spec(), clock, 0)
    assert verdict.ok and verdict.seconds == 0.0 and events == []
