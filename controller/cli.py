"""`mlfleet` command line: thin; every command calls into a module that does the work."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import click
from rich.console import Console
from rich.table import Table

from mlfleet.controller.errors import MlfleetError

# Logs and pipes get a wide table rather than rich's 80-column default.
console = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 160)
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class Context:
    debug: bool = False


def _progress(message: str) -> None:
    console.print(f"[dim]·[/dim] {message}")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: turns MlfleetError into one red line and its exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="mlfleet", standalone_mode=False)
    except MlfleetError as exc:
        if debug:
            raise
        console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        console.print("aborted")
        return 130
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    return 0


@dataclass
class Settings:
    inventory: Path
    playbook: Optional[Path]
    limit: Optional[str]
    forks: int
    state: Optional[Path]
    accept_new_host_keys: bool


EXIT_CODES = """\b
Exit codes: 0 success; 1 deployment failed or halted (or an agent failed); 2 usage or
input error (inventory, playbook, missing image); 3 lab error; 4 fleet lock held;
5 hosts unreachable."""


@click.group(epilog=EXIT_CODES)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-i", "--inventory", type=click.Path(path_type=Path), default=Path("inventory/hosts.yml"),
              show_default=True, help="Ansible-style inventory YAML.")  # fmt: skip
@click.option("-p", "--playbook", type=click.Path(path_type=Path),
              help="Model playbook (default: the one file in playbooks/).")  # fmt: skip
@click.option("--limit", help="Hosts, groups, globs, comma lists, !exclusions.")
@click.option("--forks", type=int, default=20, show_default=True, help="Hosts worked on at once.")
@click.option("--state", type=click.Path(path_type=Path), envvar="MLFLEET_STATE",
              help="Controller state DB (default ~/.local/state/mlfleet/state.db).")  # fmt: skip
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="Trust and record unknown host keys (never changed ones).",
)
@click.version_option(package_name="mlfleet")
@click.pass_context
def cli(ctx: click.Context, debug: bool, inventory: Path, playbook: Optional[Path], limit: Optional[str],
        forks: int, state: Optional[Path], accept_new_host_keys: bool) -> None:  # fmt: skip
    """Deploy ML models to a fleet of heterogeneous edge hosts."""
    Context.debug = debug
    ctx.obj = Settings(inventory, playbook, limit, forks, state, accept_new_host_keys)


def _fleet(settings: Settings, need_playbook: bool = False) -> Any:
    from mlfleet.controller.deploy import Fleet
    from mlfleet.controller.inventory import load_inventory
    from mlfleet.controller.playbook import find_playbook, load_playbook
    from mlfleet.controller.state import ControllerState, default_state_path

    inventory = load_inventory(settings.inventory)
    hosts = inventory.select(settings.limit)
    playbook = None
    if need_playbook:
        path = settings.playbook or find_playbook(Path("playbooks"))
        settings.playbook = path
        playbook = load_playbook(path)
    state = ControllerState(settings.state or default_state_path())
    return Fleet(hosts=hosts, playbook=playbook, state=state, forks=settings.forks,
                 accept_new_host_keys=settings.accept_new_host_keys, progress=_host_progress)  # fmt: skip


def _host_progress(host: str, message: str) -> None:
    console.print(
        f"[dim]·[/dim] [bold]{host}[/bold] {message}" if host != "*" else f"[dim]·[/dim] {message}"
    )


def _emit(data: Any, as_json: bool, table: Optional[Table] = None) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    elif table is not None:
        out.print(table)


def _when(ts: Optional[float]) -> str:
    return time.strftime("%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@cli.command("inventory")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def inventory_cmd(settings: Settings, as_json: bool) -> None:
    """Show the resolved hosts and their variables."""
    from mlfleet.controller.inventory import load_inventory

    inv = load_inventory(settings.inventory)
    hosts = inv.select(settings.limit)
    data = inv.to_dict()
    data["hosts"] = {h.name: data["hosts"][h.name] for h in hosts}
    table = Table(title=f"inventory {settings.inventory}")
    for col in ("host", "address", "user", "groups"):
        table.add_column(col)
    for h in hosts:
        table.add_row(
            h.name, f"{h.address}:{h.port}", h.user, ", ".join(g for g in h.groups if g != "all")
        )
    _emit(data, as_json, table)


@cli.group("agent")
def agent_group() -> None:
    """The on-host agent."""


@agent_group.command("install")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def agent_install(settings: Settings, as_json: bool) -> None:
    """Copy the agent where missing or different, install its cron entry, check it runs."""
    from mlfleet.controller.deploy import install_agents

    fleet = _fleet(settings)
    try:
        results = install_agents(fleet)
    finally:
        fleet.close()
    table = Table(title=f"agent {fleet.bundle().sha256[:12]} ({fleet.bundle().size} bytes)")
    for col in ("host", "result", "python"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, r["result"], r.get("python", r.get("reason", "")))
    _emit({"hosts": [dict(host=n, **r) for n, r in results.items()]}, as_json, table)
    _exit_for(results.values())


@cli.command("facts")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def facts_cmd(settings: Settings, as_json: bool) -> None:
    """Detect hardware, drivers and engine on every host (stored)."""
    from mlfleet.controller.deploy import gather_facts

    fleet = _fleet(settings)
    try:
        results = gather_facts(fleet)
    finally:
        fleet.close()
    table = Table(title="facts")
    for col in ("host", "arch", "GPUs", "driver / CUDA", "ROCm / L4T", "engine GPU wiring"):
        table.add_column(col)
    for name, f in results.items():
        if "error" in f:
            table.add_row(name, "[red]unreachable[/red]", f["error"], "", "", "")
            continue
        gpus = ", ".join(g["model"] for g in f["gpus"]) or "none"
        nv = f.get("nvidia") or {}
        driver = f"{nv.get('driver_version')} / {nv.get('cuda_version')}" if nv else "-"
        other = (
            (f.get("amd") or {}).get("rocm_version") or (f.get("jetson") or {}).get("l4t") or "-"
        )
        docker = f.get("docker") or {}
        wiring = ", ".join(docker.get("gpu_support") or []) or (
            "none" if docker.get("reachable") else "engine down"
        )
        table.add_row(name, f["arch"], gpus, driver, other, wiring)
    _emit({"hosts": results}, as_json, table)
    if any("error" in f for f in results.values()):
        raise SystemExit(5)


@cli.command("plan")
@click.option("--tag", required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def plan_cmd(settings: Settings, tag: str, as_json: bool) -> None:
    """Per host: the variant and image, why, and what would change. Changes nothing."""
    from mlfleet.controller.deploy import plan

    fleet = _fleet(settings, need_playbook=True)
    try:
        results = plan(fleet, tag)
    finally:
        fleet.close()
    table = Table(title=f"plan {tag}")
    for col in ("host", "variant", "change", "why"):
        table.add_column(col)
    for name, r in results.items():
        why = "; ".join(f"{x['variant']}: {x['reason']}" for x in r.get("rejected", [])) or r.get(
            "reason", ""
        )
        table.add_row(name, r.get("variant") or "-", r.get("change", r.get("result", "")), why)
    _emit({"tag": tag, "hosts": [dict(host=n, **r) for n, r in results.items()]}, as_json, table)


@cli.command("deploy")
@click.option("--tag", required=True, help="The release to deploy.")
@click.option("--canary", type=int, help="Hosts in the canary wave (default: the playbook's).")
@click.option("--batch", help="Batch size: N, N%, or a list like 1,5,20%.")
@click.option("--max-fail", help="Failures allowed per wave: N or N%.")
@click.option("--on-failure", type=click.Choice(["pause", "rollback", "continue"]))
@click.option("--transfer", type=click.Choice(["pull", "relay", "auto"]),
              help="How images reach hosts: pull from the registry, relay through an SSH tunnel "
                   "from the controller's side, or auto per host (default: each host's mlfleet_transfer, else pull).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def deploy_cmd(settings: Settings, tag: str, canary: Optional[int], batch: Optional[str], max_fail: Optional[str],
               on_failure: Optional[str], transfer: Optional[str], as_json: bool) -> None:  # fmt: skip
    """Canary, then batches, with a failure budget and the fleet lock."""
    from mlfleet.controller.deploy import DeployOptions, deploy

    fleet = _fleet(settings, need_playbook=True)
    fleet.transfer = transfer
    policy = fleet.playbook.rollout
    options = DeployOptions(
        tag=tag,
        canary=policy.canary if canary is None else canary,
        batch=_batch_option(batch) if batch else policy.batch,
        max_fail=max_fail if max_fail is not None else policy.max_fail,
        on_failure=on_failure or policy.on_failure,
    )
    try:
        outcome = deploy(fleet, options, str(settings.playbook), str(settings.inventory))
    finally:
        fleet.close()
    table = Table(title=f"deploy {tag}: {outcome['status']} (deployment {outcome['deployment']})",
                  caption=f"image bytes over the hosts' links: {_size(outcome['bytes'])}")  # fmt: skip
    for col in ("host", "result", "variant", "image", "duration", "bytes", "reason"):
        table.add_column(col)
    for h in outcome["hosts"]:
        image = (h.get("image") or "-").rsplit("/", 1)[-1]
        moved = f"{_size(h.get('bytes') or 0)} {h['transfer']}" if h.get("transfer") else "-"
        table.add_row(h["host"], h["result"], h.get("variant") or "-", image,
                      f"{h.get('duration_s', 0):.1f}s", moved, (h.get("reason") or "")[:80])  # fmt: skip
    _emit(outcome, as_json, table)
    if outcome["status"] != "succeeded":
        only_unreachable = all(
            h["result"] in ("updated", "unchanged", "unreachable") for h in outcome["hosts"]
        )
        raise SystemExit(5 if only_unreachable else 1)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _batch_option(text: str) -> Any:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    items = [int(p) if p.isdigit() else p for p in parts]
    return items if len(items) > 1 else items[0]


@cli.command("rollback")
@click.option("--to", "tag", help="The release to return to (default: each host's previous).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rollback_cmd(settings: Settings, tag: Optional[str], as_json: bool) -> None:
    """Return hosts to their previous (or a named) release."""
    from mlfleet.controller.deploy import rollback_fleet

    fleet = _fleet(settings, need_playbook=True)
    try:
        results = rollback_fleet(fleet, fleet.playbook.app, tag)
    finally:
        fleet.close()
    table = Table(title="rollback")
    for col in ("host", "result", "tag", "reason"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, r["result"], r.get("tag") or "-", r.get("reason") or "")
    _emit({"hosts": [dict(host=n, **r) for n, r in results.items()]}, as_json, table)
    _exit_for(results.values(), ok=("rolled_back",))


@cli.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status_cmd(settings: Settings, as_json: bool) -> None:
    """Per host: tag, variant, health, since, last agent tick."""
    from mlfleet.controller.deploy import fleet_status

    fleet = _fleet(settings, need_playbook=settings.playbook is not None)
    app = fleet.playbook.app if fleet.playbook else None
    try:
        results = fleet_status(fleet, app)
    finally:
        fleet.close()
    table = Table(title="status")
    for col in ("host", "tag", "variant", "health", "since", "last tick"):
        table.add_column(col)
    for name, r in results.items():
        table.add_row(name, r.get("tag") or "-", r.get("variant") or "-", r["health"], _when(r.get("since")),
                      _when(r.get("last_tick")))  # fmt: skip
    _emit({"hosts": [dict(host=n, **r) for n, r in results.items()]}, as_json, table)


@cli.command("history")
@click.option("--host", "host_name", help="Only this host.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history_cmd(settings: Settings, host_name: Optional[str], as_json: bool) -> None:
    """Deployments and per-host results, newest first."""
    from mlfleet.controller.state import ControllerState, default_state_path

    state = ControllerState(settings.state or default_state_path())
    deployments = state.deployments()
    results = state.host_results(host=host_name)
    table = Table(title="history")
    for col in ("#", "tag", "host", "wave", "result", "variant", "bytes", "finished"):
        table.add_column(col)
    table.add_column("reason", overflow="ellipsis", no_wrap=True, max_width=60)
    tags = {d["id"]: d["tag"] for d in deployments}
    for r in results[:50]:
        moved = f"{_size(r['bytes'] or 0)} {r.get('transfer') or ''}".strip()
        table.add_row(str(r["deployment_id"]), tags.get(r["deployment_id"], "?"), r["host"], r["wave"] or "-",
                      r["result"] or "-", r["variant"] or "-", moved, _when(r["finished"]), r["reason"] or "")  # fmt: skip
    _emit({"deployments": deployments, "results": results}, as_json, table)


@cli.group("lock")
def lock_group() -> None:
    """The fleet lock (one deployment at a time)."""


@lock_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def lock_status(settings: Settings, as_json: bool) -> None:
    from mlfleet.controller.state import ControllerState, default_state_path

    held = ControllerState(settings.state or default_state_path()).lock_status()
    if as_json:
        print(json.dumps({"lock": held}, indent=2))
    elif held:
        out.print(f"held by {held['holder']} (pid {held['pid']} on {held['machine']}) since {_when(held['since'])}: "
                  f"{held['reason']}{' [stale: that process is gone]' if held['stale'] else ''}")  # fmt: skip
    else:
        out.print("free")


@lock_group.command("release")
@click.pass_obj
def lock_release(settings: Settings) -> None:
    from mlfleet.controller.state import ControllerState, default_state_path

    released = ControllerState(settings.state or default_state_path()).release_lock(only_mine=False)
    _progress("lock released" if released else "the lock was not held")


def _exit_for(results: Any, ok: tuple = ("installed", "unchanged")) -> None:
    results = list(results)
    if any(r.get("result") == "unreachable" for r in results):
        raise SystemExit(5)
    if any(r.get("result") not in ok for r in results):
        raise SystemExit(1)


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


def _print_status(status: Dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(status)) if out.is_terminal else print(
            json.dumps(status, indent=2)
        )
        return
    from mlfleet.controller.lab.profiles import GpuSpec, HostProfile, JetsonSpec

    table = Table(title=f"lab {status['name']} — registry {status['registry']['address']}")
    for column in ("host", "address", "hardware", "engine", "sshd", "cron"):
        table.add_column(column)
    for host in status["hosts"]:
        p = dict(host["profile"])
        p["gpus"] = tuple(GpuSpec(**g) for g in p.get("gpus") or ())
        p["jetson"] = JetsonSpec(**p["jetson"]) if p.get("jetson") else None
        running = host["running"]
        mark = {True: "[green]up[/green]", False: "[red]down[/red]"}
        table.add_row(
            host["name"],
            host["address"],
            HostProfile(**p).describe(),
            mark[running["dockerd"]] if "dockerd" in running else "—",
            mark[running["sshd"]],
            mark[running["crond"]] if "crond" in running else "—",
        )
    out.print(table)
