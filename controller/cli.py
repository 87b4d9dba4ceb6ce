"""`mlfleet` command line: thin. Options are parsed into typed values here (a bad one is one
line and exit 2), every command calls into a module that does the work and returns typed
results, and this module only renders them (a table, or --json) and picks the exit code.
Everything shown is plain text, never rich markup, with its control characters escaped
(controller/plaintext.py): hosts, files and users cannot style, move or clear the terminal."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlfleet.controller.errors import ConfigError, ExitCode, MlfleetError
from mlfleet.controller.plaintext import printable

if TYPE_CHECKING:
    from mlfleet.controller.outcomes import (
        DeployReport,
        FactsResult,
        HostResult,
        InstallResult,
        PlanReport,
        StatusRow,
    )

# Logs and pipes get a wide table rather than rich's 80-column default.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

F = TypeVar("F", bound=Callable[..., Any])


def _progress(message: str) -> None:
    console.print(Text.assemble(("· ", "dim"), printable(message)), soft_wrap=True)


def _warning_line(message: str) -> None:
    console.print(Text.assemble(("warning: ", "yellow"), printable(message)), soft_wrap=True)


def _error_line(message: str) -> None:
    # Text from hosts and files is printed as plain text (a Text, never markup), escaped.
    console.print(Text.assemble(("error: ", "bold red"), printable(message)), soft_wrap=True)


class _EscapedFormatter(logging.Formatter):
    """--debug's log lines (tracebacks of host failures) with control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record), multiline=True)


def _log_debug() -> None:
    """--debug: the tracebacks of what failed on single hosts go to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapedFormatter("debug: %(message)s"))
    logger = logging.getLogger("mlfleet")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: any error is one red line and its exit code; a traceback only with
    --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        _log_debug()
    try:
        cli.main(args=args, prog_name="mlfleet", standalone_mode=False)
    except MlfleetError as exc:
        if debug:
            raise
        _error_line(str(exc))
        return int(exc.exit_code)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.UsageError as exc:
        if exc.format_message().startswith("Usage:"):  # no command given: the help is the answer
            console.print(Text(printable(exc.format_message(), multiline=True)))
            return ExitCode.USAGE
        command = exc.ctx.command_path if exc.ctx else "mlfleet"
        _error_line(f"{exc.format_message()} (see `{command} --help`)")
        return ExitCode.USAGE
    except click.ClickException as exc:
        _error_line(exc.format_message())
        return ExitCode.USAGE
    except (click.exceptions.Abort, KeyboardInterrupt):
        console.print("interrupted")
        return 130
    except Exception as exc:
        if debug:
            raise
        _error_line(
            f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)"
        )
        return ExitCode.FAILED
    return ExitCode.OK


@dataclass
class Settings:
    inventory: Path
    playbook: Optional[Path]
    limit: Optional[str]
    forks: int
    state: Optional[Path]
    accept_new_host_keys: bool
    vault_password_files: Tuple[str, ...] = ()
    vault_ids: Tuple[str, ...] = ()

    def configure_vault(self) -> None:
        """Where vault passwords come from, for values a command decrypts (read only then)."""
        from mlfleet.controller.ansible_vault import KEYRING

        KEYRING.configure(self.vault_password_files, self.vault_ids)


EXIT_CODES = """\b
Exit codes: 0 success; 1 deployment failed or halted (or a host's apply or rollback
failed); 2 usage or input error (options, inventory, playbook, missing image); 3 lab
error; 4 fleet lock held; 5 hosts unreachable; 6 an agent could not run on a host
(Python 3.8+, cron)."""


def _global_options(after_command: bool) -> List[Callable[[F], F]]:
    """The global options, one definition for both places: before the command (with their
    defaults) and after it (no defaults: a value given there overrides the one before)."""

    def option(*decls: str, default: Any = None, group_only: Optional[Dict[str, Any]] = None,
               **kwargs: Any) -> Callable[[F], F]:  # fmt: skip
        if after_command:
            return click.option(*decls, default=None, **kwargs)
        extra = dict(group_only or {}, show_default=default not in (None, False))
        return click.option(*decls, default=default, **extra, **kwargs)

    return [
        option("-i", "--inventory", type=click.Path(path_type=Path), default=Path("inventory/hosts.yml"),
               help="Ansible-style inventory YAML."),
        option("-p", "--playbook", type=click.Path(path_type=Path),
               help="Model playbook (default: the one file in playbooks/)."),
        option("--limit", help="Hosts, groups, globs, comma lists, !exclusions, &intersections."),
        option("--forks", type=click.IntRange(min=1), default=20, help="Hosts worked on at once."),
        option("--state", type=click.Path(path_type=Path), group_only={"envvar": "MLFLEET_STATE"},
               help="Controller state DB (default $MLFLEET_STATE or ~/.local/state/mlfleet/state.db)."),
        option("--accept-new-host-keys", is_flag=True, default=False,
               help="Trust and record unknown host keys (never changed ones)."),
        option("--vault-password-file", "vault_password_files", multiple=True, metavar="FILE",
               help="Ansible Vault password file or script (repeatable; also "
                    "$ANSIBLE_VAULT_PASSWORD_FILE)."),
        option("--vault-id", "vault_ids", multiple=True, metavar="[ID@]FILE",
               help="Ansible Vault password for a vault id (repeatable)."),
        option("--debug", is_flag=True, default=False, help="Show tracebacks."),
    ]  # fmt: skip


def fleet_options(fn: F) -> F:
    """The global options, accepted after the subcommand too (as Ansible and Kamal users
    write them): a value given there overrides the one given before it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings: Settings = click.get_current_context().find_object(Settings)  # type: ignore[assignment]
        for name in ("inventory", "playbook", "limit", "forks", "state", "accept_new_host_keys"):
            value = kwargs.pop(name)
            if value is not None:
                setattr(settings, name, value)
        for name in ("vault_password_files", "vault_ids"):  # repeatable: added to
            setattr(settings, name, (*getattr(settings, name), *(kwargs.pop(name) or ())))
        settings.configure_vault()
        kwargs.pop("debug")
        return fn(*args, **kwargs)

    for option in reversed(_global_options(after_command=True)):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def _group_options(fn: F) -> F:
    for option in reversed(_global_options(after_command=False)):
        fn = option(fn)
    return fn


@click.group(epilog=EXIT_CODES)
@_group_options
@click.version_option(package_name="mlfleet")
@click.pass_context
def cli(ctx: click.Context, debug: bool, inventory: Path, playbook: Optional[Path], limit: Optional[str],
        forks: int, state: Optional[Path], accept_new_host_keys: bool,
        vault_password_files: Tuple[str, ...], vault_ids: Tuple[str, ...]) -> None:  # fmt: skip
    """Deploy ML models to a fleet of heterogeneous edge hosts.

    The options above may also be given after the command (mlfleet deploy --tag v3 --limit edge-cpu)."""
    ctx.obj = Settings(inventory, playbook, limit, forks, state, accept_new_host_keys,
                       tuple(vault_password_files), tuple(vault_ids))  # fmt: skip
    ctx.obj.configure_vault()


def _state(settings: Settings) -> Any:
    from mlfleet.controller.state import ControllerState, default_state_path

    return ControllerState(settings.state or default_state_path())


def _playbook(settings: Settings) -> Any:
    from mlfleet.controller.playbook import find_playbook, load_playbook

    path = settings.playbook or find_playbook(Path("playbooks"))
    settings.playbook = path
    return load_playbook(path)


def _session(settings: Settings) -> Any:
    from mlfleet.controller.hostops import check_cron_values
    from mlfleet.controller.inventory import load_inventory
    from mlfleet.controller.session import FleetSession, ssh_connector

    inventory = load_inventory(settings.inventory)
    hosts = inventory.select(settings.limit, _warning_line)
    inventory.touched(hosts)
    for host in hosts:  # a value that would break the agent's cron line: before any host
        check_cron_values(host)
    return FleetSession(
        hosts,
        _state(settings),
        connector=ssh_connector(settings.accept_new_host_keys),
        forks=settings.forks,
        progress=_host_progress,
    )


def _host_progress(host: str, message: str) -> None:
    """A progress line: `· HOST MESSAGE` (`*`: the fleet's), one line whatever the host said."""
    if host == "*":
        line = Text.assemble(("· ", "dim"), printable(message))
    else:
        line = Text.assemble(("· ", "dim"), (printable(host), "bold"), " ", printable(message))
    console.print(line, soft_wrap=True)


def _table(title: str, columns: Iterable[str], caption: Optional[str] = None) -> Table:
    table = Table(
        title=Text(printable(title)), caption=Text(printable(caption)) if caption else None
    )
    for column in columns:
        table.add_column(column)
    return table


def _cell(value: Any, style: str = "") -> Text:
    """A table cell: plain text (host names, reasons and tags are never markup), escaped."""
    return Text(printable("" if value is None else value), style=style)


def _row(table: Table, *cells: Any) -> None:
    table.add_row(*(c if isinstance(c, Text) else _cell(c) for c in cells))


def _emit(data: Any, as_json: bool, table: Optional[Table] = None) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    elif table is not None:
        out.print(table)


def _when(ts: Optional[float]) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _finish(code: int) -> None:
    if code != ExitCode.OK:
        raise SystemExit(int(code))


@cli.command("inventory")
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def inventory_cmd(settings: Settings, as_json: bool) -> None:
    """Show the resolved hosts and their variables."""
    from mlfleet.controller.inventory import load_inventory

    inv = load_inventory(settings.inventory)
    hosts = inv.select(settings.limit, _warning_line)
    data = inv.to_dict()
    data["hosts"] = {h.name: data["hosts"][h.name] for h in hosts}
    table = _table(f"inventory {settings.inventory}", ("host", "address", "user", "groups"))
    for h in hosts:
        _row(
            table,
            h.name,
            f"{_shown_setting(h, 'address', 'ansible_host')}:{_shown_setting(h, 'port', 'ansible_port')}",
            _shown_setting(h, "user", "ansible_user"),
            ", ".join(g for g in h.groups if g != "all"),
        )
    _emit(data, as_json, table)


def _shown_setting(host: Any, setting: str, var: str) -> str:
    """A setting for the inventory table; one that is read only for a host a command works
    on (a template mlfleet does not evaluate, a vault value) is shown as written."""
    try:
        return str(getattr(host, setting))
    except ConfigError:  # UnevaluatedTemplate, VaultError
        value = host.vars.get(var)
        return "(vault-encrypted)" if not isinstance(value, str) else value


@cli.command("check")
@click.option("--tag", help="Also render every selected host's desired state for this release.")
@fleet_options
@click.pass_obj
def check_cmd(settings: Settings, tag: Optional[str]) -> None:
    """Validate the inventory, the playbook, --limit and --tag's templating without touching
    any host: one line, exit 0; or the first mistake with its file:line, exit 2."""
    from mlfleet.controller.config_check import check_config
    from mlfleet.controller.playbook import find_playbook

    playbook = settings.playbook or find_playbook(Path("playbooks"))
    report = check_config(settings.inventory, playbook, settings.limit, tag, _warning_line)
    out.print(Text(printable(report.summary())), soft_wrap=True)


@cli.group("agent")
def agent_group() -> None:
    """The on-host agent."""


@agent_group.command("install")
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def agent_install(settings: Settings, as_json: bool) -> None:
    """Copy the agent where missing or different, install its cron entry, check it runs."""
    from mlfleet.controller.commands import install_agents
    from mlfleet.controller.outcomes import Outcome, exit_code

    with _session(settings) as session:
        results = install_agents(session)
        bundle = session.bundle()
    table = install_table(f"agent {bundle.sha256[:12]} ({bundle.size} bytes)", results)
    _emit({"hosts": [r.to_dict() for r in results]}, as_json, table)
    _finish(exit_code((r.outcome for r in results), (Outcome.INSTALLED, Outcome.UNCHANGED)))


def install_table(title: str, results: List[InstallResult]) -> Table:
    table = _table(title, ("host", "result", "python"))
    for r in results:
        _row(table, r.host, r.outcome.value, r.python or r.reason)
    return table


@cli.command("facts")
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def facts_cmd(settings: Settings, as_json: bool) -> None:
    """Detect hardware, drivers and engine on every host (stored)."""
    from mlfleet.controller.commands import gather_facts
    from mlfleet.controller.outcomes import exit_code

    with _session(settings) as session:
        results = gather_facts(session)
    table = facts_table(results)
    _emit({"hosts": {r.host: r.to_dict() for r in results}}, as_json, table)
    _finish(exit_code((r.outcome for r in results if r.outcome is not None), ()))


def facts_table(results: List[FactsResult]) -> Table:
    table = _table(
        "facts", ("host", "arch", "GPUs", "driver / CUDA", "ROCm / L4T", "engine GPU wiring")
    )
    for r in results:
        f = r.facts
        if f is None:
            _row(
                table,
                r.host,
                _cell(r.outcome.value if r.outcome else "?", "red"),
                r.reason,
                "",
                "",
                "",
            )
            continue
        gpus = ", ".join(g.model for g in f.gpus) or "none"
        driver = f"{f.nvidia.driver_version} / {f.nvidia.cuda_version}" if f.nvidia else "-"
        other = (
            (f.amd.rocm_version if f.amd else None) or (f.jetson.l4t if f.jetson else None) or "-"
        )
        docker = f.docker
        wiring = (
            ", ".join(docker.gpu_support)
            if docker and docker.gpu_support
            else ("none" if docker and docker.reachable else "engine down")
        )
        _row(table, r.host, f.arch, gpus, driver, other, wiring)
    return table


def _rollout_options(playbook: Any, canary: Optional[str], batch: Optional[str], max_fail: Optional[str],
                     on_failure: Optional[str], transfer: Optional[str]) -> Any:  # fmt: skip
    """The playbook's rollout policy with the command line's overrides, each checked by the
    one grammar in controller/rollout.py (a bad one: one line naming the option, exit 2)."""
    from mlfleet.agent.protocol import TransferMode
    from mlfleet.controller import rollout
    from mlfleet.controller.deploy import RolloutOptions

    policy = playbook.rollout

    def parsed(option: str, parse: Callable[[Any], Any], value: Any) -> Any:
        try:
            return parse(value)
        except rollout.SpecError as exc:
            raise ConfigError(f"{option} {exc.problem}") from None
        except ValueError as exc:
            raise ConfigError(f"{option}: {exc}") from None

    return RolloutOptions(
        canary=parsed(
            "--canary", rollout.parse_canary, policy.canary if canary is None else canary
        ),
        batch=parsed("--batch", rollout.parse_batch, policy.batch if batch is None else batch),
        budget=parsed(
            "--max-fail", rollout.parse_budget, policy.max_fail if max_fail is None else max_fail
        ),
        on_failure=rollout.Action(on_failure or policy.on_failure),
        transfer=TransferMode(transfer) if transfer else None,
    )


def rollout_options(fn: F) -> F:
    fn = click.option("--on-failure", type=click.Choice(["pause", "rollback", "continue"]),
                      help="When a wave fails beyond its budget (default: the playbook's).")(fn)  # fmt: skip
    fn = click.option(
        "--max-fail", help="Failures allowed per wave: N or N% (default: the playbook's)."
    )(fn)
    fn = click.option(
        "--batch", help="Batch size: N, N%, or a list like 1,5,20% (default: the playbook's)."
    )(fn)
    fn = click.option("--canary", help="Hosts in the canary wave: N, or per-variant for one host of each "
                      "variant the plan selects (default: the playbook's).")(fn)  # fmt: skip
    return fn


@cli.command("plan")
@click.option("--tag", required=True)
@rollout_options
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def plan_cmd(settings: Settings, tag: str, canary: Optional[str], batch: Optional[str], max_fail: Optional[str],
             on_failure: Optional[str], as_json: bool) -> None:  # fmt: skip
    """Per host: the variant and image, why, and what would change; then the waves and the
    failure budget deploy would use. Changes nothing."""
    from mlfleet.controller.commands import plan
    from mlfleet.controller.outcomes import exit_code

    playbook = _playbook(settings)
    options = _rollout_options(playbook, canary, batch, max_fail, on_failure, None)
    with _session(settings) as session:
        report = plan(session, playbook, tag, options)
    _emit(report.to_dict(), as_json, plan_table(report))
    if not as_json:
        for line in plan_lines(report):
            out.print(Text(printable(line)), soft_wrap=True)
    _finish(exit_code((h.outcome for h in report.hosts if h.outcome is not None), ()))


def plan_table(report: PlanReport) -> Table:
    table = _table(f"plan {report.tag}", ("host", "variant", "change", "why"))
    for h in report.hosts:
        if h.outcome is not None:
            _row(table, h.host, "-", h.outcome.value, h.reason)
            continue
        rejected = h.selection.rejected if h.selection else []
        why = "; ".join(f"{x.variant}: {x.reason}" for x in rejected)
        _row(table, h.host, h.variant or "-", h.change, why)
    return table


def plan_lines(report: PlanReport) -> List[str]:
    """The canary, the budget and the waves, under the plan's table."""
    from mlfleet.controller.rollout import describe_plan

    head = f"canary: {report.canary}; failure budget per wave: {report.budget}, then {report.on_failure.value}"
    relaxed = [f"container: {line}" for line in report.hardening] or [
        "container: hardened defaults (all capabilities dropped, read-only root filesystem, "
        "pids limit, no-new-privileges, non-root)"
    ]
    return [head, *(f"  {line}" for line in describe_plan(report.waves)), *relaxed]


@cli.command("deploy")
@click.option("--tag", required=True, help="The release to deploy.")
@rollout_options
@click.option("--transfer", type=click.Choice(["pull", "relay", "auto"]),
              help="How images reach hosts: pull from the registry, relay through an SSH tunnel "
                   "from the controller's side, or auto per host (default: each host's mlfleet_transfer, else pull).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def deploy_cmd(settings: Settings, tag: str, canary: Optional[str], batch: Optional[str], max_fail: Optional[str],
               on_failure: Optional[str], transfer: Optional[str], as_json: bool) -> None:  # fmt: skip
    """Canary, then batches, with a failure budget and the fleet lock."""
    from mlfleet.controller.deploy import deploy

    playbook = _playbook(settings)
    options = _rollout_options(playbook, canary, batch, max_fail, on_failure, transfer)
    with _session(settings) as session:
        report = deploy(session, playbook, tag, options,
                        playbook_path=str(settings.playbook), inventory_path=str(settings.inventory))  # fmt: skip
    table = deploy_table(report)
    _emit(report.to_dict(), as_json, table)
    _finish(report.exit_code())


def deploy_table(report: DeployReport) -> Table:
    table = _table(f"deploy {report.tag}: {report.status} (deployment {report.deployment})",
                   ("host", "result", "variant", "image", "duration", "bytes", "reason"),
                   caption=f"image bytes over the hosts' links: {_size(report.bytes)}")  # fmt: skip
    for h in report.hosts:
        image = (h.image or "-").rsplit("/", 1)[-1]
        moved = f"{_size(h.bytes)} {h.transfer.value}" if h.transfer else "-"
        _row(table, h.host, h.outcome.value, h.variant or "-", image, f"{h.duration_s:.1f}s", moved,
             (h.reason or "")[:80])  # fmt: skip
    return table


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@cli.command("rollback")
@click.option("--to", "tag", help="The release to return to (default: each host's previous).")
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def rollback_cmd(settings: Settings, tag: Optional[str], as_json: bool) -> None:
    """Return hosts to their previous (or a named) release, holding the fleet lock."""
    from mlfleet.controller.commands import rollback_under_lock
    from mlfleet.controller.outcomes import Outcome, exit_code

    playbook = _playbook(settings)
    with _session(settings) as session:
        results = rollback_under_lock(session, playbook.app, tag)
    _emit({"hosts": [r.to_dict() for r in results]}, as_json, rollback_table(results))
    _finish(exit_code((r.outcome for r in results), (Outcome.ROLLED_BACK,)))


def rollback_table(results: List[HostResult]) -> Table:
    table = _table("rollback", ("host", "result", "tag", "reason"))
    for r in results:
        _row(table, r.host, r.outcome.value, r.tag or "-", r.reason)
    return table


@cli.command("status")
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def status_cmd(settings: Settings, as_json: bool) -> None:
    """Per host: tag, variant, health, since, last agent tick."""
    from mlfleet.controller.commands import fleet_status
    from mlfleet.controller.outcomes import Outcome, exit_code

    app = _playbook(settings).app if settings.playbook is not None else None
    with _session(settings) as session:
        rows = fleet_status(session, app)
    table = status_table(rows)
    _emit({"hosts": [r.to_dict() for r in rows]}, as_json, table)
    _finish(exit_code((Outcome(r.health) for r in rows if not r.reached), ()))


def status_table(rows: List[StatusRow]) -> Table:
    table = _table(
        "status", ("host", "tag", "variant", "health", "since", "last tick", "agent last did")
    )
    for r in rows:
        _row(
            table,
            r.host,
            r.tag or "-",
            r.variant or "-",
            r.health,
            _when(r.since),
            _when(r.last_tick),
            _last_did(r),
        )
    return table


def _last_did(row: StatusRow) -> str:
    """`blocked (port_taken) 2m ago`; the agent's own problems (a full disk) first; why a
    host did not answer."""
    if not row.reached:
        return row.reason or "-"
    did = row.last_action or "-"
    if row.last_action and row.last_action_cause:
        did += f" ({row.last_action_cause})"
    if row.last_action:
        did += f" {_when(row.last_action_at)}"
    return "; ".join([*row.problems, did])


@cli.command("history")
@click.option("--host", "host_name", help="Only this host.")
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def history_cmd(settings: Settings, host_name: Optional[str], as_json: bool) -> None:
    """Deployments and per-host results, newest first."""
    state = _state(settings)
    deployments = state.deployments()
    results = state.host_results(host=host_name)
    table = _table(
        "history", ("#", "tag", "host", "wave", "result", "variant", "bytes", "finished")
    )
    table.add_column("reason", overflow="ellipsis", no_wrap=True, max_width=60)
    tags = {d["id"]: d["tag"] for d in deployments}
    for r in results[:50]:
        moved = f"{_size(r['bytes'] or 0)} {r.get('transfer') or ''}".strip()
        _row(table, r["deployment_id"], tags.get(r["deployment_id"], "?"), r["host"], r["wave"] or "-",
             r["result"] or "-", r["variant"] or "-", moved, _when(r["finished"]), r["reason"] or "")  # fmt: skip
    _emit({"deployments": deployments, "results": results}, as_json, table)


@cli.group("lock")
def lock_group() -> None:
    """The fleet lock (one deployment at a time)."""


@lock_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@fleet_options
@click.pass_obj
def lock_status(settings: Settings, as_json: bool) -> None:
    """Who holds the fleet lock: read from the hosts (any controller's deployment) and
    from this controller's state DB."""
    from mlfleet.controller.commands import fleet_lock_status

    held = _state(settings).lock_status()
    with _session(settings) as session:
        hosts = fleet_lock_status(session)
    if as_json:
        print(json.dumps({"lock": held, "hosts": hosts}, indent=2))
        return
    if held:
        out.print(Text(printable(f"this controller: held by {held['holder']} (pid {held['pid']} on {held['machine']}) since {_when(held['since'])}: "
                                 f"{held['reason']}{' [stale: that process is gone]' if held['stale'] else ''}")))  # fmt: skip
    by_holder: Dict[str, List[str]] = {}
    for row in hosts:
        holder = row["holder"]
        if row["error"]:
            key = f"could not be read: {row['error']}"
        elif holder is None:
            key = "free"
        else:
            stale = " [stale: its lease ran out]" if holder["stale"] else ""
            key = (f"held by {holder['user']}@{holder['machine']} (pid {holder['pid']}) since "
                   f"{_when(holder['since'])}: {holder['reason']}{stale}")  # fmt: skip
        by_holder.setdefault(key, []).append(row["host"])
    for key, names in by_holder.items():
        out.print(Text(printable(f"{key}: {', '.join(names)}")))


@lock_group.command("release")
@fleet_options
@click.pass_obj
def lock_release(settings: Settings) -> None:
    """Remove the fleet lock from the hosts and this controller's state DB, whoever holds
    it: only when you are sure its deployment is gone."""
    from mlfleet.controller.commands import fleet_lock_release

    released = _state(settings).release_lock(only_mine=False)
    with _session(settings) as session:
        names = fleet_lock_release(session)
    _progress(
        f"lock released on {len(names)} host(s)"
        + (" and in this controller's state DB" if released else "")
    )


# --- lab ---------------------------------------------------------------------------------


@cli.group()
@click.option("--name", envvar="MLFLEET_LAB", default="lab", show_default=True,
              help="Lab instance (several can run side by side on different subnets).")  # fmt: skip
@click.pass_context
def lab(ctx: click.Context, name: str) -> None:
    """A local fleet of simulated hosts: own sshd, Docker engine, cron and hardware each."""
    from mlfleet.controller.lab.layout import LabLayout

    ctx.obj = LabLayout.named(name)


@lab.command("up")
@click.option("--profiles", type=click.Path(path_type=Path), help="Host profiles YAML.")
@click.option("--inventory", type=click.Path(path_type=Path), default=Path("inventory/lab.yml"),
              show_default=True, help="Where to write the lab's inventory.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def lab_up(layout: Any, profiles: Optional[Path], inventory: Path, as_json: bool) -> None:
    """Bring the lab up (idempotent; repairs what a crashed run left)."""
    from mlfleet.controller.lab import fleet
    from mlfleet.controller.lab.inventory_file import render_inventory
    from mlfleet.controller.lab.profiles import load_profiles

    spec = load_profiles(profiles)
    fleet.up(layout, spec, _progress)
    status = fleet.status(layout)
    inventory.parent.mkdir(parents=True, exist_ok=True)
    inventory.write_text(render_inventory(status))
    _progress(f"inventory written to {inventory}")
    _print_status(status, as_json)


@lab.command("down")
@click.option("--purge", is_flag=True, help="Also remove the cached Debian base layer.")
@click.pass_obj
def lab_down(layout: Any, purge: bool) -> None:
    """Remove everything the lab made (processes, namespaces, bridge, mounts, files)."""
    import shutil

    from mlfleet.controller.lab import fleet

    fleet.check_system()
    fleet.down(layout, progress=_progress)
    if purge and layout.cache.exists():
        shutil.rmtree(layout.cache)
    _progress(f"lab {layout.name!r} is down")


@lab.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def lab_status(layout: Any, as_json: bool) -> None:
    """Show what runs: hosts, addresses, engines, the registry."""
    from mlfleet.controller.lab import fleet

    _print_status(fleet.status(layout), as_json)


@lab.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def lab_ssh(layout: Any, host: str, command: List[str]) -> None:
    """Open a shell on HOST, or run COMMAND there."""
    from mlfleet.controller.lab import fleet

    argv = fleet.ssh_argv(layout, host, list(command))
    os.execvp(argv[0], argv)


@lab.command("engine")
@click.argument("host")
@click.argument("action", type=click.Choice(["stop", "start", "restart"]))
@click.pass_obj
def lab_engine(layout: Any, host: str, action: str) -> None:
    """Stop, start or restart HOST's Docker engine (fault injection)."""
    from mlfleet.controller.lab import fleet

    fleet.engine(layout, host, action)
    _progress(f"{host}: engine {action} done")


@lab.command("link")
@click.argument("host")
@click.argument("state", type=click.Choice(["down", "up"]))
@click.pass_obj
def lab_link(layout: Any, host: str, state: str) -> None:
    """Cut (down) or restore (up) HOST's network link (fault injection)."""
    from mlfleet.controller.lab import fleet

    fleet.link(layout, host, state == "up")
    _progress(f"{host}: link {state}")


@lab.command("gpu")
@click.argument("host")
@click.argument("state", type=click.Choice(["lost", "back"]))
@click.pass_obj
def lab_gpu(layout: Any, host: str, state: str) -> None:
    """Unload (lost) or load again (back) HOST's GPU driver, as a kernel update without the
    module rebuilt would (fault injection; nvidia-smi, rocm-smi and the toolkit stay)."""
    from mlfleet.controller.lab import fleet

    fleet.gpu(layout, host, state == "back")
    _progress(f"{host}: GPU driver {'loaded' if state == 'back' else 'not loaded'}")


@lab.command("login")
@click.argument("host")
@click.option("--logout", is_flag=True, help="remove the login again")
@click.pass_obj
def lab_login(layout: Any, host: str, logout: bool) -> None:
    """Place the lab registry's login in HOST's own Docker config (root's
    ~/.docker/config.json on that host, 0600), as an operator's `docker login` there would:
    its agent can then pull again with no controller."""
    from mlfleet.controller.lab import fleet

    path = fleet.login(layout, host, not logout)
    _progress(f"{host}: {'logged out of' if logout else 'logged in to'} the lab registry ({path})")


@lab.command("revoke-login")
@click.option("--restore", is_flag=True, help="make the login valid again")
@click.pass_obj
def lab_revoke_login(layout: Any, restore: bool) -> None:
    """Revoke the lab registry's login (as a revoked or expired token would be): the
    registry refuses it from its next request on; the controller's config.json keeps it."""
    from mlfleet.controller.lab import fleet, lab_registry

    fleet.require_state(layout)
    lab_registry.revoke_login(layout, not restore)
    _progress(f"lab registry login {'restored' if restore else 'revoked'}")


@lab.command("reboot")
@click.argument("host")
@click.pass_obj
def lab_reboot(layout: Any, host: str) -> None:
    """Reboot HOST: engine stopped, every process killed, what runs at boot started again."""
    from mlfleet.controller.lab import fleet

    fleet.check_system()
    seconds = fleet.reboot(layout, host)
    _progress(f"{host}: rebooted in {seconds:.1f}s")


def _print_status(status: Dict[str, Any], as_json: bool) -> None:
    if as_json:
        if out.is_terminal:
            out.print_json(json.dumps(status), ensure_ascii=True)
        else:
            print(json.dumps(status, indent=2))
        return
    from mlfleet.controller.lab.profiles import HostProfile

    table = _table(
        f"lab {status['name']} — registry {status['registry']['address']}",
        ("host", "address", "hardware", "gpu driver", "engine", "sshd", "cron"),
    )

    def mark(running: Dict[str, bool], name: str) -> Text:
        if name not in running:
            return _cell("—")
        return _cell("up", "green") if running[name] else _cell("down", "red")

    gpu = {"ok": ("loaded", "green"), "lost": ("not loaded", "red")}
    for host in status["hosts"]:
        running = host["running"]
        _row(
            table,
            host["name"],
            host["address"],
            HostProfile.from_dict(host["profile"]).describe(),
            _cell(*gpu.get(host.get("gpu") or "", ("—", ""))),
            mark(running, "dockerd"),
            mark(running, "sshd"),
            mark(running, "crond"),
        )
    out.print(table)
