"""`mlfleet` command line: thin; every command calls into a module that does the work."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import click
from rich.console import Console
from rich.table import Table

from mlfleet.controller.errors import MlfleetError

console = Console(stderr=True, highlight=False)
out = Console(highlight=False)


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


@click.group()
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="mlfleet")
def cli(debug: bool) -> None:
    """Deploy ML models to a fleet of heterogeneous edge hosts."""
    Context.debug = debug


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
            mark[running["crond"]],
        )
    out.print(table)
