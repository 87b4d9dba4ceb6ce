"""What the controller does on one host, through its SSH connection: install the agent
(by hash, atomically, with its cron entry), read facts, apply a desired state, roll back."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from mlfleet.agent.bundle import AgentBundle
from mlfleet.controller.hosts import Host
from mlfleet.controller.transport import CommandResult, Connection, HostUnreachable

CRON_MARK = "# mlfleet-agent"
AGENT_FILE = "mlfleet-agent.pyz"


class AgentFailed(HostUnreachable):
    """The agent on the host could not do what was asked (its own words in the message)."""

    exit_code = 1


def agent_path(host: Host) -> str:
    return posixpath.join(host.agent_dir, AGENT_FILE)


def agent_argv(host: Host, *args: str, with_state: bool = True) -> List[str]:
    """`python3 -S <agent>.pyz ARGS` plus where this host keeps things (from its variables).
    `-S`: the agent carries what it imports, so the host's site-packages and .pth hooks can
    neither slow its start nor shadow its code."""
    argv = [host.python, "-S", agent_path(host), *args]
    if with_state:
        argv += [
            "--agent-dir",
            host.agent_dir,
            "--root",
            host.root,
            "--device-root",
            host.device_root,
        ]
    if host.docker_host and with_state:
        argv += ["--docker-host", host.docker_host]
    return argv


def _detect_argv(host: Host) -> List[str]:
    argv = agent_argv(host, "detect", "--json", "--root", host.root, with_state=False)
    if host.docker_host:
        argv += ["--docker-host", host.docker_host]
    return argv


def cron_line(host: Host) -> str:
    argv = agent_argv(host, "tick")
    quoted = " ".join(_cron_quote(a) for a in argv)
    log = _cron_quote(posixpath.join(host.agent_dir, "tick.log"))
    return f"* * * * * {quoted} >> {log} 2>&1 {CRON_MARK}"


def _cron_quote(arg: str) -> str:
    import shlex

    # `%` means newline to cron: escape it too.
    return shlex.quote(arg).replace("%", "\\%")


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


def run_agent(conn: Connection, bundle: AgentBundle, argv: Sequence[str], *, stdin: Optional[bytes] = None,
              timeout: float = 600.0, on_stderr_line: Optional[Callable[[str], None]] = None
              ) -> Tuple[CommandResult, bool]:  # fmt: skip
    """Run an agent command (argv from `agent_argv`) with this bundle's agent on the host:
    one round trip when it is there already; otherwise copy it (atomically) and run the
    command through the same hash check. The cron entry is put in place when missing.
    Returns the command's result and whether the agent was copied."""
    host = conn.host
    probe_argv = ["sh", "-c", _PROBE, "sh", agent_path(host), _cron_spool(host), bundle.sha256, *argv]  # fmt: skip

    def probe() -> AgentProbe:
        return parse_probe(
            conn.run(probe_argv, stdin=stdin, timeout=timeout, on_stderr_line=on_stderr_line)
        )

    found = probe()
    copied = found.sha256 != bundle.sha256
    if copied:
        conn.put(bundle.path.read_bytes(), agent_path(host), 0o755)
        found = probe()
        if found.sha256 != bundle.sha256:
            raise AgentFailed(
                "the agent's hash on the host does not match after the copy", where=host.name
            )
    if found.result.code != 0 and not found.result.stdout.strip():
        # Failed without a word on stdout: can the agent run on this host at all?
        _check_version(conn, conn.run(agent_argv(host, "version", "--json", with_state=False), timeout=60))  # fmt: skip
    _install_cron(conn, found.crontab)
    return found.result, copied


def _check_version(conn: Connection, version: CommandResult) -> Dict[str, Any]:
    """The agent's `version --json`, or why it cannot run on this host."""
    host = conn.host
    if version.code != 0:
        raise AgentFailed(
            f"`{host.python} {agent_path(host)} version` failed: {(version.stderr or version.stdout).strip()[-300:]}",
            where=host.name,
            hint="the agent needs Python 3.8+ on the host (mlfleet_python)",
        )
    return json.loads(version.stdout)


def install_agent(conn: Connection, bundle: AgentBundle) -> Dict[str, Any]:
    """Copy the zipapp where missing or different, install the cron entry, check it runs."""
    host = conn.host
    version, copied = run_agent(
        conn, bundle, agent_argv(host, "version", "--json", with_state=False), timeout=60
    )
    return {"copied": copied, "sha256": bundle.sha256, **_check_version(conn, version)}


# A spool file written whole and renamed into place, then its user named in cron.update:
# what `crontab` does to tell a running busybox crond to reload (harmless for other crons).
_WRITE_SPOOL = (
    'umask 077 && cat > "$1.mlfleet-tmp" && mv -f "$1.mlfleet-tmp" "$1" && echo "$3" >> "$2"'
)


def _install_cron(conn: Connection, existing: str) -> None:
    """Put mlfleet's entry into the crontab `existing` came from, unless it is there already."""
    host = conn.host
    line = cron_line(host)
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


def _agent_json(conn: Connection, result: CommandResult, what: str) -> Dict[str, Any]:
    try:
        return json.loads(result.stdout)
    except ValueError:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise AgentFailed(
            f"{what} failed: {detail[-1] if detail else 'no output'}", where=conn.host.name
        ) from None


def facts(conn: Connection, bundle: AgentBundle) -> Dict[str, Any]:
    result, _ = run_agent(conn, bundle, _detect_argv(conn.host), timeout=120)
    return _agent_json(conn, result, "agent detect")


def select(conn: Connection, bundle: AgentBundle, variants: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The agent's choice of variant for these variants (nothing is changed; the variants go
    on stdin, nothing is written on the host)."""
    host = conn.host
    argv = agent_argv(host, "select", "--variants", "-", "--json", "--root", host.root, with_state=False)  # fmt: skip
    if host.docker_host:
        argv += ["--docker-host", host.docker_host]
    stdin = json.dumps({"variants": variants}).encode()
    result, _ = run_agent(conn, bundle, argv, stdin=stdin, timeout=120)
    return _agent_json(conn, result, "agent select")


def apply(conn: Connection, bundle: AgentBundle, desired: Dict[str, Any],
          on_event: Optional[Callable[[Dict[str, Any]], None]] = None, timeout: float = 1800.0) -> Dict[str, Any]:  # fmt: skip
    """Run the agent's apply with the desired state on stdin; its progress events (JSON
    lines on stderr) go to `on_event`; returns its result."""

    def line(text: str) -> None:
        if on_event is None or not text.startswith("{"):
            return
        try:
            on_event(json.loads(text))
        except ValueError:
            pass

    result, _ = run_agent(conn, bundle, agent_argv(conn.host, "apply", "-"),
                          stdin=json.dumps(desired).encode(), timeout=timeout, on_stderr_line=line)  # fmt: skip
    return _agent_json(conn, result, "agent apply")


def rollback(conn: Connection, app: str, tag: Optional[str] = None) -> Dict[str, Any]:
    args = ["rollback", "--app", app] + (["--to", tag] if tag else [])
    return _agent_json(conn, conn.run(agent_argv(conn.host, *args), timeout=900), "agent rollback")


def status(conn: Connection) -> Dict[str, Any]:
    return _agent_json(
        conn, conn.run(agent_argv(conn.host, "status", "--json"), timeout=120), "agent status"
    )
