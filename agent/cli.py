"""`mlfleet-agent` command line."""

from __future__ import annotations

import argparse
import errno
import json
import os
import platform
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from mlfleet.agent import __version__
from mlfleet.agent.private_dir import PRIVATE_UMASK
from mlfleet.agent.protocol import (
    SCHEMA,
    ApplyStatus,
    Event,
    ExitCode,
    VersionInfo,
    selection_to_dict,
)


class AgentError(Exception):
    """Bad input or a state the agent cannot work in: one line for the operator."""

    def __init__(self, message: str, exit_code: int = ExitCode.ERROR):
        super().__init__(message)
        self.exit_code = exit_code


def _root(args: argparse.Namespace) -> str:
    # The lab's sshd (or a container's environment) may say where the host is mounted.
    return args.root or os.environ.get("MLFLEET_ROOT") or "/"


def _version(args: argparse.Namespace) -> int:
    code = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    info = VersionInfo(agent=__version__, python=platform.python_version(), code=code)
    print(
        json.dumps(info.to_dict())
        if args.json
        else f"mlfleet-agent {__version__} (python {info.python})"
    )
    return ExitCode.OK


def _detect(args: argparse.Namespace) -> int:
    from mlfleet.agent.detect.host_facts import detect_host_facts

    facts = detect_host_facts(_root(args), args.docker_host)
    if args.json:
        print(json.dumps(facts.to_dict(), indent=2))
    else:
        from mlfleet.agent.report import facts_text

        print(facts_text(facts))
    return 0


def _load_document(path: str) -> Any:
    text = sys.stdin.read() if path == "-" else _read(path)
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml  # bundled in the agent's zipapp; JSON works without it
    except ImportError:
        raise AgentError(
            f"{path}: not JSON, and PyYAML is not available to read YAML", ExitCode.USAGE
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise AgentError(f"{where}: not valid YAML or JSON", ExitCode.USAGE) from None


def _select(args: argparse.Namespace) -> int:
    from mlfleet.agent.facts import HostFacts
    from mlfleet.agent.selection import select_variant
    from mlfleet.agent.variants import VariantError, parse_variants

    doc = _load_document(args.variants)
    if isinstance(doc, dict) and isinstance(doc.get("schema"), int) and doc["schema"] > SCHEMA:
        raise AgentError(
            f"{args.variants}: schema {doc['schema']}; this agent reads {SCHEMA}", ExitCode.USAGE
        )
    items = doc.get("variants") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise AgentError(f"{args.variants}: expected a `variants:` list", ExitCode.USAGE)
    try:
        variants = parse_variants(items)
    except VariantError as exc:
        raise AgentError(f"{args.variants}: {exc}", ExitCode.USAGE) from None
    if args.facts:
        try:
            facts = HostFacts.from_dict(_load_document(args.facts))
        except ValueError as exc:
            raise AgentError(f"{args.facts}: {exc}", ExitCode.USAGE) from None
    else:
        from mlfleet.agent.detect.host_facts import detect_host_facts

        facts = detect_host_facts(_root(args), args.docker_host)
    selection = select_variant(variants, facts)
    if args.json:
        print(json.dumps(selection_to_dict(selection), indent=2))
    else:
        from mlfleet.agent.report import selection_text

        print(selection_text(selection))
    return ExitCode.OK if selection.variant else ExitCode.NO_VARIANT


DEFAULT_AGENT_DIR = "/var/lib/mlfleet"


def _agent_dir(args: argparse.Namespace) -> str:
    return args.agent_dir or os.environ.get("MLFLEET_AGENT_DIR") or DEFAULT_AGENT_DIR


def _emit_stderr(event: Event) -> None:
    """Progress for the controller (and a curious operator): one JSON object per line.
    Best effort: a controller that went away (a closed SSH channel) must not change what
    the apply does; its result stays in the host's history."""
    line = event.to_dict()
    if not event.time:
        line["time"] = round(time.time(), 3)
    try:
        print(json.dumps(line), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _open_store(agent_dir: str) -> Any:
    from mlfleet.agent.sealed_env import SealKeyError
    from mlfleet.agent.state import StateStore

    try:
        return StateStore(os.path.join(agent_dir, "state.db"))
    except SealKeyError as exc:  # sealing an older agent's record needs the key
        raise AgentError(str(exc)) from None


def _open_host(args: argparse.Namespace) -> Any:
    from mlfleet.agent.engine_api import EngineAPI, default_docker_host
    from mlfleet.agent.host import AgentHost

    root = _root(args)
    agent_dir = _agent_dir(args)
    docker_host = args.docker_host or default_docker_host(root)
    return AgentHost(
        agent_dir=agent_dir,
        root=root,
        device_root=args.device_root or os.environ.get("MLFLEET_DEVICE_ROOT") or "/",
        docker_host=docker_host,
        engine=EngineAPI(docker_host),
        store=_open_store(agent_dir),
        emit=_emit_stderr,
    )


def _make_private(agent_dir: str) -> None:
    """Tighten what an older agent (or an operator) left open to other users in the agent's
    directory, before anything there is read or written, and say so in the history (once:
    then nothing is left open)."""
    from mlfleet.agent.private_dir import EVENT_KIND, summary, tighten, worth_saying

    tightened = tighten(agent_dir)
    if not worth_saying(agent_dir, tightened):
        return
    try:
        store = _open_store(agent_dir)
        try:
            store.event(EVENT_KIND, summary(agent_dir, tightened))
        finally:
            store.close()
    except sqlite3.Error:
        pass  # its record cannot be written now (a full disk): the modes are fixed all the same


def _locked(args: argparse.Namespace, command: str, wait_s: float) -> Any:
    from mlfleet.agent.lock import AgentBusy, HostLock

    lock = HostLock(os.path.join(_agent_dir(args), "agent.lock"), command)
    try:
        lock.acquire(wait_s)
    except AgentBusy as exc:
        raise AgentError(str(exc), ExitCode.BUSY) from None
    return lock


def _apply(args: argparse.Namespace) -> int:
    from mlfleet.agent.apply import apply
    from mlfleet.agent.protocol import ApplyRequest

    text = sys.stdin.read() if args.file in (None, "-") else _read(args.file)
    try:
        request = ApplyRequest.from_dict(json.loads(text))
    except ValueError as exc:  # JSON errors, ProtocolError and DesiredStateError alike
        said = str(exc)
        if not said.startswith(("desired state", "apply request")):
            said = f"desired state: {said}"
        raise AgentError(said, ExitCode.USAGE) from None
    with _locked(args, "apply", args.wait):
        result = apply(_open_host(args), request.desired, pull_via=args.pull_via,
                       credential=request.credential,
                       store_credential=request.store_credential)  # fmt: skip
    _answer(result.to_dict())
    return ExitCode.OK if result.status.ok else ExitCode.ERROR


def _answer(data: Dict[str, Any]) -> None:
    """The result on stdout, best effort: the controller that asked may be gone (its result
    is in the host's history for the next contact)."""
    try:
        print(json.dumps(data, indent=2), flush=True)
    except (OSError, ValueError):
        pass


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise AgentError(f"{path}: cannot read: {exc.strerror}", ExitCode.USAGE) from None


def _rollback(args: argparse.Namespace) -> int:
    from mlfleet.agent.apply import rollback_to

    with _locked(args, "rollback", args.wait):
        result = rollback_to(_open_host(args), args.app, args.to)
    _answer(result.to_dict())
    return ExitCode.OK if result.status is ApplyStatus.ROLLED_BACK else ExitCode.ERROR


def _tick(args: argparse.Namespace) -> int:
    from mlfleet.agent.lock import AgentBusy, HostLock
    from mlfleet.agent.tick import tick

    lock = HostLock(os.path.join(_agent_dir(args), "agent.lock"), "tick")
    try:
        lock.acquire(args.wait)
    except AgentBusy as exc:
        print(f"mlfleet-agent: tick skipped: {exc}", file=sys.stderr)
        return 0  # an apply is at work; the next tick comes in a minute
    with lock:
        status = tick(_open_host(args))
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        for action in status.actions:
            print(action)
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    from mlfleet.agent.tick import host_status

    status = host_status(_open_host(args))
    if args.json:
        print(json.dumps(status.to_dict(), indent=2))
        return ExitCode.OK
    for app in status.apps:
        cur = app.current
        if not cur:
            print(f"{app.app}: nothing serving")
            continue
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cur.since))
        print(
            f"{app.app}: {cur.tag} ({cur.variant}) {app.health.value} since {since}; previous {app.previous}"
        )
    return ExitCode.OK


def _history(args: argparse.Namespace) -> int:
    host = _open_host(args)
    releases = [r.to_dict() for r in host.store.releases(args.app)]
    events = host.store.events(args.app, limit=args.limit)
    if args.json:
        print(json.dumps({"releases": releases, "events": events}, indent=2))
        return 0
    for e in reversed(events):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
        print(f"{at}  {e['app'] or '-':<12} {e['kind']:<16} {e['message']}")
    return 0


def _daemon(args: argparse.Namespace) -> int:
    """The tick every --interval seconds, for good, or for --for seconds (what the cron
    entry runs every minute when a host wants healing in seconds: cron stays the
    supervisor). One daemon per host: another waits an interval for the first to finish
    its window, then leaves quietly."""
    from mlfleet.agent.lock import AgentBusy, HostLock

    lock = HostLock(os.path.join(_agent_dir(args), "daemon.lock"), "daemon")
    try:
        lock.acquire(args.interval if args.for_s else 0.0)
    except AgentBusy as exc:
        if sys.stderr.isatty():
            print(f"mlfleet-agent: daemon not started: {exc}", file=sys.stderr)
        return ExitCode.OK
    with lock:
        started = time.monotonic()
        while True:
            began = time.monotonic()
            try:
                _tick(argparse.Namespace(**{**vars(args), "json": False, "wait": 0.0}))
            except Exception as exc:
                print(f"mlfleet-agent: tick failed: {exc}", file=sys.stderr, flush=True)
            if args.for_s and time.monotonic() - started + args.interval >= args.for_s:
                return ExitCode.OK
            time.sleep(max(0.0, args.interval - (time.monotonic() - began)))


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _bundle(args: argparse.Namespace) -> int:
    from mlfleet.agent.bundle import BundleError, build_zipapp

    try:
        bundle = build_zipapp(args.output)
    except BundleError as exc:
        raise AgentError(str(exc)) from None
    print(json.dumps({"path": str(bundle.path), "sha256": bundle.sha256, "bytes": bundle.size}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlfleet-agent", description="mlfleet host agent")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")

    version = sub.add_parser("version", help="print the agent version")
    version.add_argument("--json", action="store_true")
    version.set_defaults(func=_version)

    def host_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--root", help="host root prefix (default: $MLFLEET_ROOT or /)")
        p.add_argument(
            "--docker-host", help="Docker engine (default: $DOCKER_HOST or the standard socket)"
        )

    detect = sub.add_parser("detect", help="detect GPUs, drivers and the Docker engine")
    detect.add_argument("--json", action="store_true")
    host_options(detect)
    detect.set_defaults(func=_detect)

    select = sub.add_parser("select", help="choose the image variant that runs on this host")
    select.add_argument(
        "--variants", required=True, help="YAML or JSON with a `variants:` list (- for stdin)"
    )
    select.add_argument("--facts", help="facts from `detect --json` (default: detect now)")
    select.add_argument("--json", action="store_true")
    host_options(select)
    select.set_defaults(func=_select)

    def state_options(p: argparse.ArgumentParser) -> None:
        host_options(p)
        p.add_argument(
            "--agent-dir",
            help=f"state and lock (default: $MLFLEET_AGENT_DIR or {DEFAULT_AGENT_DIR})",
        )
        p.add_argument("--device-root", help="where device nodes are, as the engine sees them "
                       "(default: $MLFLEET_DEVICE_ROOT or /)")  # fmt: skip

    apply = sub.add_parser("apply", help="apply a desired state (JSON file or stdin)")
    apply.add_argument("file", nargs="?", help="desired state JSON (default: stdin)")
    apply.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the host lock")
    apply.add_argument("--pull-via", help="pull the image from this registry mirror (host:port) "
                       "instead of its own registry, then tag it under its own name")  # fmt: skip
    state_options(apply)
    apply.set_defaults(func=_apply)

    rollback = sub.add_parser("rollback", help="make a kept release current again")
    rollback.add_argument("--app", required=True)
    rollback.add_argument("--to", help="the tag to return to (default: the previous release)")
    rollback.add_argument("--wait", type=float, default=30.0)
    state_options(rollback)
    rollback.set_defaults(func=_rollback)

    tick = sub.add_parser("tick", help="keep this host's releases healthy (run from cron)")
    tick.add_argument("--json", action="store_true")
    tick.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the host lock")
    state_options(tick)
    tick.set_defaults(func=_tick)

    status = sub.add_parser("status", help="what serves on this host")
    status.add_argument("--json", action="store_true")
    state_options(status)
    status.set_defaults(func=_status)

    history = sub.add_parser("history", help="releases and events on this host")
    history.add_argument("--app")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--json", action="store_true")
    state_options(history)
    history.set_defaults(func=_history)

    daemon = sub.add_parser("daemon", help="run the tick every --interval seconds (no cron needed)")
    daemon.add_argument("--interval", type=_positive, default=60.0, help="seconds between ticks")
    daemon.add_argument("--for", dest="for_s", type=_positive, help="stop after this many seconds")
    state_options(daemon)
    daemon.set_defaults(func=_daemon)

    bundle = sub.add_parser("bundle", help="build the agent zipapp")
    bundle.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    bundle.set_defaults(func=_bundle)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Everything the agent writes is its user's alone (0700 directories, 0600 files).
    umask = os.umask(PRIVATE_UMASK)
    try:
        return _main(argv)
    finally:
        os.umask(umask)  # for a caller in the same process (a test)


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        if hasattr(args, "agent_dir"):
            _make_private(_agent_dir(args))
        return int(args.func(args))
    except AgentError as exc:
        if args.debug:
            raise
        print(f"mlfleet-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except sqlite3.OperationalError as exc:  # its record cannot be written (a full disk)
        if args.debug:
            raise
        where = (
            os.path.join(_agent_dir(args), "state.db")
            if hasattr(args, "agent_dir")
            else "its record"
        )
        hint = (
            "; free space on that filesystem"
            if "full" in str(exc) or "disk I/O" in str(exc)
            else ""
        )
        print(f"mlfleet-agent: error: {where}: {exc}{hint}", file=sys.stderr)
        return ExitCode.ERROR
    except OSError as exc:  # a file of its own it cannot write (its reports on a full disk)
        if args.debug or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"mlfleet-agent: error: {exc.filename}: {exc.strerror}; free space on that filesystem",
              file=sys.stderr)  # fmt: skip
        return ExitCode.ERROR


__all__: List[str] = ["build_parser", "main"]
