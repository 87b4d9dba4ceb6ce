"""Proving that a release serves before it is committed.

`probe_once` runs one round of every configured check; `wait_healthy` repeats rounds with
Docker/Swarm semantics until the release is healthy or has failed; `monitor` keeps watching
for the monitor window after that. `compare_json`, the inference check's comparison, is pure.

The clock and sleep are injected, so the waiting logic is tested without waiting. Probes never
raise: anything that goes wrong is a failed probe whose detail says what, with the numbers.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import shlex
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from mlfleet.agent.desired import ExecCheck, HealthSpec, HttpCheck, InferenceCheck, TcpCheck
from mlfleet.agent.engine_api import EngineError, EngineUnreachable
from mlfleet.agent.protocol import Event, EventKind

EVIDENCE_LINES = 20
_MAX_BODY = 1024 * 1024  # an answer bigger than this is cut (inference answers are small)
_MIN_INTERVAL_S = 0.05  # a zero interval would spin
_MIN_TIMEOUT_S = 0.1
_ENGINE_ERRORS = (EngineUnreachable, EngineError, OSError, ValueError)

Emit = Callable[[Event], None]
T = TypeVar("T")


@dataclass
class Probe:
    """The result of one check, once."""

    check: str  # e.g. "http :8080/health", "docker HEALTHCHECK", "container"
    ok: bool
    detail: str  # plain words with the numbers, e.g. "HTTP 503 (wanted 200)"


@dataclass
class Verdict:
    """How a wait or a monitor window ended, with what was seen on the way."""

    ok: bool
    evidence: List[str]  # newest last, at most EVIDENCE_LINES; the last line is the verdict
    probes: List[Probe]  # the last round
    seconds: float

    @property
    def reason(self) -> str:
        """One line for an operator: why it ended this way."""
        return self.evidence[-1] if self.evidence else ""


@dataclass
class Target:
    """Where the checks reach the release.

    host: the address the agent reaches published ports on (e.g. "127.0.0.1");
    host_ports: container port -> published host port; use_docker_health: the image has a
    HEALTHCHECK and the spec asks to wait for it.
    """

    engine: Any  # EngineAPI, or anything with container_inspect and exec_run
    container_id: str
    host: str
    host_ports: Dict[int, int]
    use_docker_health: bool


# --- one round ----------------------------------------------------------------------------

_CONTAINER = "container"
_DOCKER = "docker HEALTHCHECK"


@dataclass
class _Round:
    probes: List[Probe] = field(default_factory=list)
    stopped: Optional[str] = None  # the container is not running: why
    docker_starting: bool = False  # Docker's own check has no verdict yet

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(p.ok for p in self.probes)

    @property
    def pending(self) -> bool:
        """Every check passed except Docker's, which is still "starting": no verdict, so not
        a failure (Docker resolves "starting" on its own, within the image's start period)."""
        failing = [p for p in self.probes if not p.ok]
        return (
            self.stopped is None
            and self.docker_starting
            and all(p.check == _DOCKER for p in failing)
        )

    @property
    def failed(self) -> bool:
        return not self.ok and not self.pending

    def summary(self) -> str:
        if self.stopped is not None:
            return self.stopped
        if self.ok:
            n = len(self.probes)
            return f"all {n} checks passed" if n > 1 else "the check passed"
        return "; ".join(f"{p.check}: {p.detail}" for p in self.probes if not p.ok)


def probe_once(target: Target, spec: HealthSpec) -> List[Probe]:
    """One round of every configured check, each bounded by spec.timing.timeout_s.

    The container's state comes first; when it is not running, the other checks are skipped.
    """
    return _run_round(target, spec, spec.timing.timeout_s).probes


def _run_round(target: Target, spec: HealthSpec, timeout: float) -> _Round:
    rnd = _Round()
    try:
        info = target.engine.container_inspect(target.container_id)
    except _ENGINE_ERRORS as exc:
        # The engine not answering says nothing about the release: a failed probe, not a stop.
        rnd.probes.append(Probe(_CONTAINER, False, f"Docker engine did not answer: {exc}"))
    else:
        probe, rnd.stopped = _container_probe(info)
        rnd.probes.append(probe)
        if rnd.stopped is not None:
            return rnd
        if target.use_docker_health and spec.docker:
            probe, rnd.docker_starting = _docker_health_probe(info)
            rnd.probes.append(probe)
    for check in spec.http:
        rnd.probes.append(_http_probe(target, check, timeout))
    for tcp in spec.tcp:
        rnd.probes.append(_tcp_probe(target, tcp, timeout))
    for ex in spec.exec:
        rnd.probes.append(_exec_probe(target, ex, timeout))
    for inference in spec.inference:
        rnd.probes.append(_inference_probe(target, inference, timeout))
    return rnd


def _container_probe(info: Optional[Dict[str, Any]]) -> Tuple[Probe, Optional[str]]:
    """The container probe, and why the container is not running (None when it is)."""
    if info is None:
        why = "container is gone (removed)"
        return Probe(_CONTAINER, False, why), why
    state = info.get("State") or {}
    if state.get("Restarting"):
        # A restart policy brought it back, but it did exit: the release crashed.
        why = _exit_detail(state) + " and is restarting"
        return Probe(_CONTAINER, False, why), why
    if not state.get("Running"):
        why = _exit_detail(state)
        return Probe(_CONTAINER, False, why), why
    if state.get("Paused"):
        return Probe(_CONTAINER, False, "container is paused"), None
    return Probe(_CONTAINER, True, "running"), None


def _exit_detail(state: Dict[str, Any]) -> str:
    status = state.get("Status")
    if status == "created":
        return "container was created but never started"
    text = f"container exited with code {state.get('ExitCode')}"
    if status not in (None, "exited", "running", "restarting"):
        text += f" (status {status})"
    if state.get("OOMKilled"):
        text += " (killed: out of memory)"
    if state.get("Error"):
        text += f": {state['Error']}"
    return text


def _docker_health_probe(info: Dict[str, Any]) -> Tuple[Probe, bool]:
    """Docker's own HEALTHCHECK verdict, and whether it is still "starting"."""
    health = (info.get("State") or {}).get("Health")
    if not health:
        return Probe(_DOCKER, False, "no health status: the image has no HEALTHCHECK"), False
    status = health.get("Status")
    last = _last_health_log(health)
    if status == "healthy":
        return Probe(_DOCKER, True, "healthy"), False
    if status == "starting":
        detail = "starting (no verdict yet)" + (f"; {last}" if last else "")
        return Probe(_DOCKER, False, detail), True
    detail = f"{status or 'no status'}" + (f"; {last}" if last else "")
    return Probe(_DOCKER, False, detail), False


def _last_health_log(health: Dict[str, Any]) -> str:
    log = health.get("Log") or []
    if not log:
        return ""
    entry = log[-1] or {}
    line = _last_line(str(entry.get("Output") or ""))
    code = entry.get("ExitCode")
    return f"last check exited {code}" + (f": {line}" if line else "")


def _host_port(target: Target, port: int) -> Tuple[Optional[int], str]:
    hp = target.host_ports.get(port)
    if hp is None:
        published = ", ".join(f"{c}->{h}" for c, h in sorted(target.host_ports.items()))
        return None, (
            f"container port {port} is not published on the host (published: {published or 'none'})"
        )
    return hp, ""


def _http_probe(target: Target, check: HttpCheck, timeout: float) -> Probe:
    name = f"http :{check.port}{check.path}"
    hp, why = _host_port(target, check.port)
    if hp is None:
        return Probe(name, False, why)
    try:
        status, body, _ = _http_request(target.host, hp, "GET", check.path, None, timeout)
    except (OSError, http.client.HTTPException) as exc:
        return Probe(name, False, _connection_error(exc, timeout))
    text = body.decode("utf-8", errors="replace")
    if status != check.status:
        return Probe(name, False, f"HTTP {status} (wanted {check.status})" + _snippet(text))
    if check.body_contains is not None and check.body_contains not in text:
        return Probe(
            name,
            False,
            f"HTTP {status} but the body does not contain {check.body_contains!r}" + _snippet(text),
        )
    return Probe(name, True, f"HTTP {status}")


def _tcp_probe(target: Target, check: TcpCheck, timeout: float) -> Probe:
    name = f"tcp :{check.port}"
    hp, why = _host_port(target, check.port)
    if hp is None:
        return Probe(name, False, why)
    try:
        socket.create_connection((target.host, hp), timeout=timeout).close()
    except OSError as exc:
        return Probe(name, False, _connection_error(exc, timeout))
    return Probe(name, True, "connected")


# The engine's socket is given a little longer than the check, so that a command that hangs
# is told by the check's own deadline ("no answer within"), not by a socket that gave up.
_EXEC_SOCKET_SLACK_S = 1.0


class _NoAnswer(Exception):
    """A call did not return within its time."""


def _call_within(call: Callable[[], T], seconds: float) -> T:
    """call()'s value, or _NoAnswer after `seconds`. The engine answers an exec when its
    command ends, so a command that hangs, or trickles output, would hold the round for
    good: the call runs in a daemon thread that is left to end with the engine's answer."""
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name="mlfleet-health-exec", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise _NoAnswer()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _exec_probe(target: Target, check: ExecCheck, timeout: float) -> Probe:
    name = "exec " + _shorten(shlex.join(check.command), 40)
    command = list(check.command)
    try:
        code, output = _call_within(
            lambda: target.engine.exec_run(
                target.container_id, command, timeout + _EXEC_SOCKET_SLACK_S
            ),
            timeout,
        )
    except _NoAnswer:
        return Probe(
            name, False, f"did not finish within {timeout:g}s (timeout_s): the command hangs"
        )
    except _ENGINE_ERRORS as exc:
        return Probe(name, False, f"could not run: {exc}")
    if code == 0:
        return Probe(name, True, "exit 0")
    line = _last_line(output)
    return Probe(name, False, f"exit {code}" + (f": {line}" if line else ""))


def _inference_probe(target: Target, check: InferenceCheck, timeout: float) -> Probe:
    name = f"inference :{check.port}{check.path}"
    hp, why = _host_port(target, check.port)
    if hp is None:
        return Probe(name, False, why)
    payload = json.dumps(check.request).encode()
    try:
        status, body, cut = _http_request(target.host, hp, "POST", check.path, payload, timeout)
    except (OSError, http.client.HTTPException) as exc:
        return Probe(name, False, _connection_error(exc, timeout))
    text = body.decode("utf-8", errors="replace")
    if status != 200:
        return Probe(name, False, f"HTTP {status} (wanted 200)" + _snippet(text))
    if cut:
        return Probe(name, False, f"HTTP 200 but the answer is larger than {_MAX_BODY} bytes")
    try:
        answer = json.loads(text)
    except ValueError:
        return Probe(name, False, "HTTP 200 but the answer is not JSON" + _snippet(text))
    mismatch = compare_json(check.expect, answer, check.tolerance)
    if mismatch is not None:
        return Probe(name, False, mismatch)
    return Probe(name, True, f"answer matches (tolerance {check.tolerance:g})")


def _http_request(
    host: str, port: int, method: str, path: str, body: Optional[bytes], timeout: float
) -> Tuple[int, bytes, bool]:
    """(status, body, cut) within `timeout` seconds in all: the socket timeout alone bounds
    each read, not a server that answers slowly byte by byte."""
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        return left

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.connect()
        sock = conn.sock  # the response reads through it; conn lets go of it (Connection: close)
        headers = {"Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        sock.settimeout(remaining())
        conn.request(method, path, body=body, headers=headers)
        sock.settimeout(remaining())
        resp = conn.getresponse()
        chunks: List[bytes] = []
        size = 0
        while size <= _MAX_BODY:
            sock.settimeout(remaining())
            chunk = resp.read1(64 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
        return resp.status, data[:_MAX_BODY], size > _MAX_BODY
    finally:
        conn.close()


def _connection_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, socket.timeout):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer: {exc!r}"
    return str(exc) or type(exc).__name__


# --- waiting -----------------------------------------------------------------------------


class _Evidence:
    """What was seen, as lines for an operator: identical consecutive rounds share a line
    ("3.0s-7.0s (5 rounds): ..."), and only the newest EVIDENCE_LINES are kept."""

    def __init__(self) -> None:
        self._entries: List[List[Any]] = []  # [first_s, last_s, rounds, text]
        self._dropped = 0

    def round(self, at: float, text: str) -> None:
        if self._entries and self._entries[-1][3] == text and self._entries[-1][2] > 0:
            self._entries[-1][1] = at
            self._entries[-1][2] += 1
            return
        self._add([at, at, 1, text])

    def note(self, text: str) -> None:
        self._add([None, None, 0, text])

    def _add(self, entry: List[Any]) -> None:
        self._entries.append(entry)
        if len(self._entries) > EVIDENCE_LINES - 1:  # one line left for "... left out"
            del self._entries[0]
            self._dropped += 1

    def lines(self) -> List[str]:
        out = [f"({self._dropped} earlier lines left out)"] if self._dropped else []
        for first, last, rounds, text in self._entries:
            if rounds == 0:
                out.append(text)
            elif rounds == 1:
                out.append(f"{first:.1f}s: {text}")
            else:
                out.append(f"{first:.1f}s-{last:.1f}s ({rounds} rounds): {text}")
        return out


def wait_healthy(
    target: Target,
    spec: HealthSpec,
    emit: Emit = lambda e: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Run rounds every interval_s until the release is healthy or has failed.

    Docker/Swarm semantics: failed rounds that start within start_period_s do not count;
    after it, `retries` failed rounds in a row fail; the first round where every check passes
    is healthy (Docker's own check must say "healthy": "starting" is no verdict yet, neither a
    pass nor a failure); a container that is not running fails at once, with its exit code;
    deadline_s bounds everything. Emits {"event": "health", "ok", "detail"} once per round.
    """
    timing = spec.timing
    retries = max(1, timing.retries)
    interval = max(timing.interval_s, _MIN_INTERVAL_S)
    start = clock()
    end = start + timing.deadline_s
    evidence = _Evidence()
    in_a_row = 0
    while True:
        began = clock()
        timeout = max(min(timing.timeout_s, end - began), _MIN_TIMEOUT_S)
        rnd = _run_round(target, spec, timeout)
        at = clock() - start
        summary = rnd.summary()
        emit(Event(EventKind.HEALTH, summary, ok=rnd.ok))
        if rnd.stopped is not None:
            return _verdict(False, evidence, f"failed after {at:.1f}s: {summary}", rnd, at)
        if rnd.ok:
            return _verdict(True, evidence, f"healthy after {at:.1f}s: {summary}", rnd, at)
        if not rnd.failed:
            in_a_row = 0
            evidence.round(at, summary)
        elif began - start < timing.start_period_s:
            evidence.round(at, summary + " (start period, not counted)")
        else:
            in_a_row += 1
            evidence.round(at, summary)
            if in_a_row >= retries:
                reason = (
                    f"unhealthy after {at:.1f}s: {in_a_row} failed rounds in a row after the "
                    f"{timing.start_period_s:g}s start period; last: {summary}"
                )
                return _verdict(False, evidence, reason, rnd, at)
        if clock() >= end:
            reason = f"not healthy after {timing.deadline_s:g}s (deadline); last: {summary}"
            return _verdict(False, evidence, reason, rnd, clock() - start)
        sleep(max(0.0, min(began + interval, end) - clock()))


def monitor(
    target: Target,
    spec: HealthSpec,
    window_s: float,
    emit: Emit = lambda e: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """After the release turned healthy, keep running rounds every interval_s for window_s.

    It fails when the container stops, or after `retries` failed rounds in a row; it is ok
    when the window passes. A run of failures still open when the window ends is followed to
    its end (a pass, or `retries`), so a release failing at the last moment is not let through.
    """
    if window_s <= 0:
        return Verdict(ok=True, evidence=["no monitor window (0s)"], probes=[], seconds=0.0)
    timing = spec.timing
    retries = max(1, timing.retries)
    interval = max(timing.interval_s, _MIN_INTERVAL_S)
    start = clock()
    end = start + window_s
    evidence = _Evidence()
    in_a_row = 0
    began = start
    while True:
        # The first round comes one interval in: wait_healthy has just run one.
        wake = began + interval if began >= end else min(began + interval, end)
        sleep(max(0.0, wake - clock()))
        began = clock()
        rnd = _run_round(target, spec, timing.timeout_s)
        at = clock() - start
        summary = rnd.summary()
        emit(Event(EventKind.HEALTH, summary, ok=rnd.ok))
        evidence.round(at, summary)
        if rnd.stopped is not None:
            reason = f"failed {at:.1f}s into the {window_s:g}s monitor window: {summary}"
            return _verdict(False, evidence, reason, rnd, at)
        in_a_row = in_a_row + 1 if rnd.failed else 0
        if in_a_row >= retries:
            reason = (
                f"turned unhealthy {at:.1f}s into the {window_s:g}s monitor window: "
                f"{in_a_row} failed rounds in a row; last: {summary}"
            )
            return _verdict(False, evidence, reason, rnd, at)
        if clock() >= end and in_a_row == 0:
            reason = f"stayed healthy for the {window_s:g}s monitor window"
            return _verdict(True, evidence, reason, rnd, clock() - start)


def _verdict(ok: bool, evidence: _Evidence, reason: str, rnd: _Round, seconds: float) -> Verdict:
    evidence.note(reason)
    return Verdict(ok=ok, evidence=evidence.lines(), probes=rnd.probes, seconds=seconds)


# --- comparing answers ---------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def compare_json(expected: Any, actual: Any, tolerance: float, path: str = "$") -> Optional[str]:
    """None when `actual` contains `expected`, else the first difference, naming its path.

    Objects: every expected key present and matching (extra keys allowed); arrays: the same
    length, element by element; numbers (not booleans): |actual - expected| <= tolerance,
    inclusive up to float rounding; anything else: equal, and of the same JSON type.
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {_described(actual)}"
        for key, want in expected.items():
            sub = _child(path, key)
            if key not in actual:
                return f"{sub}: missing"
            diff = compare_json(want, actual[key], tolerance, sub)
            if diff is not None:
                return diff
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)):
            return f"{path}: expected an array, got {_described(actual)}"
        if len(actual) != len(expected):
            return f"{path}: {len(actual)} items, expected {len(expected)}"
        for i, (want, got) in enumerate(zip(expected, actual)):
            diff = compare_json(want, got, tolerance, f"{path}[{i}]")
            if diff is not None:
                return diff
        return None
    if _is_number(expected):
        if not _is_number(actual):
            return f"{path}: {_show(actual)} is not a number (expected {_show(expected)})"
        if _within(actual, expected, tolerance):
            return None
        return (
            f"{path}: {_show(actual)} differs from expected {_show(expected)} by "
            f"{_format_diff(abs(actual - expected), tolerance)} (tolerance {tolerance:g})"
        )
    if type(actual) is type(expected) and actual == expected:
        return None
    return f"{path}: {_show(actual)} != expected {_show(expected)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _within(actual: float, expected: float, tolerance: float) -> bool:
    if actual == expected:
        return True  # also equal infinities
    if isinstance(actual, float) and isinstance(expected, float) and math.isnan(actual):
        return math.isnan(expected)
    diff = abs(actual - expected)
    # 0.93 - 0.929 is 0.0010000000000000009: a tolerance of 0.001 is meant to let it pass.
    return diff <= tolerance or (tolerance > 0 and diff <= tolerance * (1 + 1e-9))


def _format_diff(diff: float, tolerance: float) -> str:
    # Short, but never so rounded that it reads as the tolerance itself.
    for digits in range(6, 18):
        short = f"{diff:.{digits}g}"
        if short != f"{tolerance:.{digits}g}":
            return short
    return repr(diff)


def _child(path: str, key: Any) -> str:
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key) if isinstance(key, str) else repr(key)}]"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if _is_number(value):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _described(value: Any) -> str:
    return "null" if value is None else f"{_json_type(value)} {_show(value)}"


def _show(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        try:
            return _shorten(json.dumps(value), 60)
        except (TypeError, ValueError):
            pass
    return _shorten(repr(value), 60)


# --- text ----------------------------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return _shorten(lines[-1], 200) if lines else ""


def _snippet(body: str) -> str:
    line = " ".join(body.split())
    return f": {_shorten(line, 120)}" if line else ""
