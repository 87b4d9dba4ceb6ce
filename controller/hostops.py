"""What the controller does on one host, through its transport: install the agent (by hash,
atomically, with its cron entry), read facts, choose a variant, apply a desired state, roll
back, ask for status. Every answer is read through agent/protocol.py into a typed record."""

from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from mlfleet.agent import protocol
from mlfleet.agent.bundle import AgentBundle
from mlfleet.agent.protocol import (
    AgentPlace,
    ApplyRequest,
    ApplyResult,
    Event,
    HostFacts,
    HostStatus,
    ProtocolError,
    Selection,
    VersionInfo,
)
from mlfleet.controller.errors import ConfigError, ExitCode, MlfleetError
from mlfleet.controller.hosts import Host
from mlfleet.controller.transport import CommandResult, Transport, is_connection_error

T = TypeVar("T")

CRON_MARK = "# mlfleet-agent"
AGENT_FILE = "mlfleet-agent.pyz"


class AgentFailed(MlfleetError):
    """The host answered, but its agent could not do what was asked (a missing or too old
    Python, a broken cron, a message this controller cannot read): its own words in the
    message. Not `HostUnreachable`: the operator's fix is on the host, not the network."""

    exit_code = ExitCode.AGENT_FAILED


def agent_path(host: Host) -> str:
    return posixpath.join(host.agent_dir, AGENT_FILE)


def place(host: Host) -> AgentPlace:
    """Where the agent keeps things on this host (from its variables)."""
    return AgentPlace(
        agent_dir=host.agent_dir,
        root=host.root,
        device_root=host.device_root,
        docker_host=host.docker_host or None,
    )


def agent_argv(host: Host, args: Sequence[str]) -> List[str]:
    """`python3 -S <agent>.pyz ARGS` (ARGS from the protocol's builders). `-S`: the agent
    carries what it imports, so the host's site-packages and .pth hooks can neither slow
    its start nor shadow its code."""
    return [host.python, "-S", agent_path(host), *args]


def cron_line(host: Host) -> str:
    """The agent's crontab entry: a tick each minute, or, with a shorter `tick_interval`, a
    daemon that ticks every N seconds for the minute (cron starts the next one: it is the
    daemon's supervisor, also after a reboot, and an upgraded agent runs within a minute).
    Always one line: a value that would break it is refused (`check_cron_values`)."""
    check_cron_values(host)
    interval = host.tick_interval
    args = (
        protocol.tick_args(place(host))
        if interval >= 60
        else protocol.daemon_args(place(host), interval, for_s=60)
    )
    argv = agent_argv(host, args)
    quoted = " ".join(shlex.quote(a) for a in argv)
    log = shlex.quote(posixpath.join(host.agent_dir, "tick.log"))
    # umask 077: tick.log (and all the agent writes) private from the first tick on
    line = f"* * * * * umask 077; {quoted} >> {log} 2>&1 {CRON_MARK}"
    if _cron_breaker(line) is not None:  # every value in it is checked above: a new one was not
        raise AssertionError(f"cron line of {host.name} is not one plain line: {line!r}")
    return line


def _cron_breaker(text: str) -> Optional[str]:
    """What in `text` a crontab line cannot hold, in words, or None (pure). Quoting does not
    help: cron reads a line up to its newline before any shell sees it, and turns `%` into
    a newline (the rest going to the command's stdin), even inside shell quotes; busybox
    crond has no escape for `%` at all."""
    for char in text:
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            return f"a control character ({char!r})"
        if char == "%":
            return "a `%` (cron turns it into a newline)"
    return None


# The host variables the cron line is made of (the Python and the agent's paths).
_CRON_VARS = (
    ("mlfleet_python", "ansible_python_interpreter"),
    ("mlfleet_agent_dir",),
    ("mlfleet_root",),
    ("mlfleet_device_root",),
    ("mlfleet_docker_host",),
)


def check_cron_values(host: Host) -> None:
    """Refuse (ConfigError naming the host, the variable and its file:line) a variable the
    agent's cron line is made of that holds a newline, a carriage return or any other
    control character, or a `%`: in a crontab line each would end the entry or add
    another job. Checked before anything is done on the host."""
    for names in _CRON_VARS:
        for name in names:
            value = host.vars.get(name)
            if not isinstance(value, str):
                continue
            problem = _cron_breaker(value.strip())  # stripped: as the setting reads it
            if problem is not None:
                raise ConfigError(
                    f"host {host.name!r}: `{name}` holds {problem}, which would break the"
                    " agent's cron line",
                    where=host.origins.get(name, host.where) or None,
                    hint=f"set {name} to a plain path",
                )
            break  # the first one set is the one used


def merge_crontab(existing: str, line: str) -> str:
    """Replace mlfleet's entry in a crontab, keeping every other line as it was."""
    kept = [entry for entry in existing.splitlines() if not entry.rstrip().endswith(CRON_MARK)]
    return "\n".join([*kept, line]) + "\n"


# On a fleet that already has the agent, every agent command is one round trip (every remote
# command costs a session and a login shell on the host, and a round trip on an edge link):
# the same shell line tells the agent file's hash and the crontab, then runs the command only
# when the hash is the controller's. Sections are split by MARK; the exit code is the
# command's. Arguments: agent file, cron spool ("" for `crontab -l`), expected hash, argv.
MARK = "--mlfleet-probe--"
_PROBE = (
    'sum=$(sha256sum "$1" 2>/dev/null); echo "$sum"; echo "' + MARK + '"; '
    'if [ -n "$2" ]; then cat "$2"; else crontab -l; fi 2>/dev/null; echo "' + MARK + '"; '
    'case "$sum" in "$3 "*) ;; *) exit 0;; esac; '
    'shift 3; exec "$@"'
)


@dataclass(frozen=True)
class AgentProbe:
    sha256: Optional[str]  # of the agent file on the host, None when missing
    crontab: str  # the spool file (mlfleet_cron_dir) or `crontab -l`; "" when none
    result: CommandResult  # the agent command's, when the file there was the expected one


def parse_probe(result: CommandResult) -> AgentProbe:
    """Split the probe's output (pure)."""
    parts = result.stdout.split(MARK + "\n", 2)
    if len(parts) != 3:
        return AgentProbe(None, "", result)
    digest = parts[0].split()[0] if parts[0].strip() else None
    return AgentProbe(digest, parts[1], CommandResult(result.code, parts[2], result.stderr))


def _cron_spool(host: Host) -> str:
    if not host.cron_dir:
        return ""
    return posixpath.join(
        host.cron_dir, "root" if host.user == "root" or host.become else host.user
    )


def run_agent(conn: Transport, bundle: AgentBundle, argv: Sequence[str], *, stdin: Optional[bytes] = None,
              timeout: float = 600.0, on_stderr_line: Optional[Callable[[str], None]] = None
              ) -> Tuple[CommandResult, bool]:  # fmt: skip
    """Run an agent command (argv from `agent_argv`) with this bundle's agent on the host:
    one round trip when it is there already; otherwise copy it (atomically) and run the
    command through the same hash check. The cron entry is put in place when missing.
    Returns the command's result and whether the agent was copied."""
    host = conn.host
    line = cron_line(host)  # a value that would break it: refused before the host is touched
    probe_argv = ["sh", "-c", _PROBE, "sh", agent_path(host), _cron_spool(host), bundle.sha256, *argv]  # fmt: skip

    def probe() -> AgentProbe:
        return parse_probe(
            conn.run(probe_argv, stdin=stdin, timeout=timeout, on_stderr_line=on_stderr_line)
        )

    found = probe()
    copied = found.sha256 != bundle.sha256
    if copied:
        _copy_agent(conn, bundle)
        found = probe()
        if found.sha256 != bundle.sha256:
            raise AgentFailed(
                "the agent's hash on the host does not match after the copy", where=host.name
            )
    _explain_silence(conn, found.result)
    _install_cron(conn, found.crontab, line)
    return found.result, copied


def _copy_agent(conn: Transport, bundle: AgentBundle) -> None:
    """Put the zipapp in place; a file the host refuses (permissions, a missing or read-only
    directory, a full disk) is AgentFailed with what to do, a dropped connection is not."""
    path = agent_path(conn.host)
    try:
        conn.put(bundle.path.read_bytes(), path, 0o700)  # the agent's user's alone
    except OSError as exc:
        if is_connection_error(exc):
            raise
        raise AgentFailed(
            f"could not copy the agent to {path}: {exc.strerror or exc}",
            where=conn.host.name,
            hint="set mlfleet_become: true (sudo), or mlfleet_agent_dir to a directory"
            f" {conn.host.user} may write",
        ) from None


def _check_version(conn: Transport, version: CommandResult) -> VersionInfo:
    """The agent's `version --json`, or why it cannot run on this host."""
    host = conn.host
    if version.code != 0:
        said = (version.stderr or version.stdout).strip()
        # Python says "can't open file '<agent>'"; a missing Python, "<python>: not found".
        missing = "can't open file" in said
        raise AgentFailed(
            f"`{host.python} {agent_path(host)} version` failed: {said[-300:]}",
            where=host.name,
            hint="the agent is not installed there: mlfleet agent install"
            if missing
            else "the agent needs Python 3.8+ on the host (mlfleet_python)",
        )
    return _read(conn, version, "agent version", VersionInfo.from_dict)


def _run_installed(conn: Transport, args: Sequence[str], timeout: float) -> CommandResult:
    """Run a command of the agent already on the host (status and rollback never install
    one); a failure without a word on stdout is explained by the agent's version check."""
    result = conn.run(agent_argv(conn.host, args), timeout=timeout)
    _explain_silence(conn, result)
    return result


def _explain_silence(conn: Transport, result: CommandResult) -> None:
    """An agent command that failed without a word on stdout: can the agent run on this
    host at all? (AgentFailed with what to do when it cannot.)"""
    if result.code != 0 and not result.stdout.strip():
        _check_version(conn, conn.run(agent_argv(conn.host, protocol.version_args()), timeout=60))


@dataclass(frozen=True)
class Installed:
    """The agent on a host after `install_agent`."""

    copied: bool  # False: the same agent was there already
    sha256: str
    version: VersionInfo


def install_agent(conn: Transport, bundle: AgentBundle) -> Installed:
    """Copy the zipapp where missing or different, install the cron entry, check it runs."""
    version, copied = run_agent(
        conn, bundle, agent_argv(conn.host, protocol.version_args()), timeout=60
    )
    return Installed(copied, bundle.sha256, _check_version(conn, version))


# A spool file written whole and renamed into place, then its user named in cron.update:
# what `crontab` does to tell a running busybox crond to reload (harmless for other crons).
_WRITE_SPOOL = (
    'umask 077 && cat > "$1.mlfleet-tmp" && mv -f "$1.mlfleet-tmp" "$1" && echo "$3" >> "$2"'
)


def _install_cron(conn: Transport, existing: str, line: str) -> None:
    """Put mlfleet's entry `line` into the crontab `existing` came from, unless it is there
    already."""
    host = conn.host
    if line in existing.splitlines():
        return
    crontab = merge_crontab(existing, line).encode()
    if host.cron_dir:
        spool = _cron_spool(host)
        update = posixpath.join(host.cron_dir, "cron.update")
        argv = ["sh", "-c", _WRITE_SPOOL, "sh", spool, update, posixpath.basename(spool)]
        result = conn.run(argv, stdin=crontab, timeout=30)
    else:
        result = conn.run(["crontab", "-"], stdin=crontab, timeout=30)
    if result.code != 0:
        raise AgentFailed(f"could not install the cron entry: {result.stderr.strip()}", where=host.name,
                          hint="install cron, or run `mlfleet-agent daemon` on the host")  # fmt: skip


def _read(conn: Transport, result: CommandResult, what: str, parse: Callable[[Any], T]) -> T:
    """The agent's JSON answer as a protocol record, or AgentFailed in the agent's words."""
    try:
        data = json.loads(result.stdout)
    except (ValueError, RecursionError):
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise AgentFailed(
            f"{what} failed: {detail[-1][-300:] if detail else 'no output'}", where=conn.host.name
        ) from None
    try:
        return parse(data)
    except ProtocolError as exc:
        raise AgentFailed(f"{what}: {exc}", where=conn.host.name) from None
    except _MALFORMED as exc:  # JSON of the wrong shape: a record from_dict could not read
        raise AgentFailed(
            f"{what}: an answer this controller cannot read ({type(exc).__name__}: {exc})",
            where=conn.host.name,
            hint="run `mlfleet agent install` so the host runs this controller's agent",
        ) from None


# What reading a record of the wrong shape raises (a missing key, a list for a mapping, ...).
_MALFORMED = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)


def facts(conn: Transport, bundle: AgentBundle) -> HostFacts:
    argv = agent_argv(conn.host, protocol.detect_args(place(conn.host)))
    result, _ = run_agent(conn, bundle, argv, timeout=120)
    return _read(conn, result, "agent detect", protocol.facts_from_dict)


def select(conn: Transport, bundle: AgentBundle, variants: List[Dict[str, Any]]) -> Selection:
    """The agent's choice of variant for these variants (nothing is changed; the variants go
    on stdin, nothing is written on the host)."""
    argv = agent_argv(conn.host, protocol.select_args(place(conn.host)))
    stdin = json.dumps(protocol.SelectRequest(variants).to_dict()).encode()
    result, _ = run_agent(conn, bundle, argv, stdin=stdin, timeout=120)
    return _read(conn, result, "agent select", protocol.selection_from_dict)


def apply(conn: Transport, bundle: AgentBundle, request: ApplyRequest, *, pull_via: Optional[str] = None,
          on_event: Optional[Callable[[Event], None]] = None, timeout: float = 1800.0) -> ApplyResult:  # fmt: skip
    """Run the agent's apply with the request (desired state and pull credential) on stdin,
    the only place the credential travels; its progress events (JSON lines on stderr) go to
    `on_event`; returns its result."""

    def line(text: str) -> None:
        if on_event is None or not text.startswith("{"):
            return
        try:
            event = Event.from_dict(json.loads(text))
        except (ProtocolError, *_MALFORMED):
            return  # progress is best effort; the result says what happened
        on_event(event)

    argv = agent_argv(conn.host, protocol.apply_args(place(conn.host), pull_via))
    stdin = json.dumps(request.to_dict()).encode()
    result, _ = run_agent(conn, bundle, argv, stdin=stdin, timeout=timeout, on_stderr_line=line)
    return _read(conn, result, "agent apply", ApplyResult.from_dict)


def rollback(conn: Transport, app: str, tag: Optional[str] = None) -> ApplyResult:
    result = _run_installed(conn, protocol.rollback_args(place(conn.host), app, tag), 900)
    return _read(conn, result, "agent rollback", ApplyResult.from_dict)


def status(conn: Transport) -> HostStatus:
    result = _run_installed(conn, protocol.status_args(place(conn.host)), 120)
    return _read(conn, result, "agent status", HostStatus.from_dict)
