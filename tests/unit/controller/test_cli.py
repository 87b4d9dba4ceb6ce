"""The real `mlfleet` command line, run as a user runs it: a bad option or input is one line
and exit 2, never a traceback; the global options work after the subcommand too; `mlfleet
check` validates without touching a host. (Hosts named *.invalid: a name that never
resolves fails at once, with no connect retries.)"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
from rich.console import Console

from mlfleet.controller import cli
from tests.paths import REPO

PLAYBOOK = REPO / "playbooks" / "sentiment.yml"
INVENTORY = """\
all:
  children:
    edge:
      hosts:
        edge-cpu: {ansible_host: edge-cpu.invalid}
        edge-t4: {ansible_host: edge-t4.invalid}
"""


def mlfleet(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY)
    argv = [sys.executable, "-m", "mlfleet.controller", "-i", str(inventory), "-p", str(PLAYBOOK),
            "--state", str(tmp_path / "state.db"), *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--max-fail", "abc"], "--max-fail"),
        (["--batch", "0"], "--batch"),
        (["--batch", "1,0"], "--batch"),
        (["--canary", "-1"], "--canary"),
        (["--canary", "some"], "--canary"),
        (["--forks", "0"], "--forks"),
        (["--transfer", "carrier-pigeon"], "--transfer"),
        (["--on-failure", "panic"], "--on-failure"),
        (["--limit", "edge-nope"], "edge-nope"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(tmp_path: Path, args: List[str], said: str) -> None:
    proc = mlfleet(tmp_path, "deploy", "--tag", "v1", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0] and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout


def test_a_missing_tag_is_one_line_too(tmp_path: Path) -> None:
    proc = mlfleet(tmp_path, "deploy")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--tag" in proc.stderr


def test_global_options_work_after_the_subcommand(tmp_path: Path) -> None:
    proc = mlfleet(tmp_path, "inventory", "--json", "--limit", "edge-t4")
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)["hosts"]) == ["edge-t4"]
    # The same host set as with --limit before the subcommand.
    before = subprocess.run(
        [sys.executable, "-m", "mlfleet.controller", "-i", str(tmp_path / "hosts.yml"), "--limit", "edge-t4",
         "inventory", "--json"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert json.loads(before.stdout) == json.loads(proc.stdout)


def test_an_unreachable_host_is_reported_not_raised(tmp_path: Path) -> None:
    proc = mlfleet(tmp_path, "status", "--json", "--forks", "2")
    assert proc.returncode == 5, proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    assert {h["host"]: h["health"] for h in hosts} == {
        "edge-cpu": "unreachable",
        "edge-t4": "unreachable",
    }
    assert "Traceback" not in proc.stderr


# --- in process (fast): the CLI's consoles swapped for buffers ----------------------------


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> Iterator:
    """run(*args, inventory=INVENTORY, playbook=PLAYBOOK) -> (exit code, stdout, stderr)."""

    def go(
        *args: str, inventory: str = INVENTORY, playbook: Path = PLAYBOOK
    ) -> Tuple[int, str, str]:
        streams = io.StringIO(), io.StringIO()
        monkeypatch.setattr(cli, "out", Console(file=streams[0], width=400, force_terminal=False))
        monkeypatch.setattr(
            cli, "console", Console(file=streams[1], width=400, force_terminal=False)
        )
        (tmp_path / "hosts.yml").write_text(inventory)
        code = cli.main(["-i", str(tmp_path / "hosts.yml"), "-p", str(playbook),
                         "--state", str(tmp_path / "state.db"), *args])  # fmt: skip
        printed = capsys.readouterr()  # --json is print()ed, --debug logs to sys.stderr
        return code, printed.out + streams[0].getvalue(), printed.err + streams[1].getvalue()

    yield go
    for handler in list(logging.getLogger("mlfleet").handlers):  # --debug's
        logging.getLogger("mlfleet").removeHandler(handler)


def test_check_says_what_it_checked_in_one_line(run) -> None:
    assert run("check") == (
        0,
        "inventory: 2 hosts in 1 group; playbook sentiment: 4 variants; OK\n",
        "",
    )
    templated = INVENTORY + "  vars: {mlfleet_registry: 'registry:5000', model_data_dir: /srv/m}\n"
    code, out, _ = run("check", "--limit", "edge-t4", "--tag", "v3", inventory=templated)
    assert (code, out) == (0, "inventory: 1 host (--limit edge-t4 of 2) in 1 group; playbook sentiment:"
                              " 4 variants; tag v3: rendered for 1 host; OK\n")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "inventory", "said"),
    [
        ([], INVENTORY + "  vars: {mlfleet_transfer: carrier-pigeon}\n",
         "hosts.yml:7: host 'edge-cpu': `mlfleet_transfer` must be one of pull, relay, auto"),
        (["--limit", "edge-nope"], INVENTORY, "--limit 'edge-nope' selects no host"),
        (["--tag", "[x:B]"], INVENTORY, "tag '[x:B]' is not a Docker tag"),
        ([], INVENTORY.replace("edge-t4.invalid}", "edge-t4.invalid, mlfleet_agent_dir: \"/opt/x\\n* * * * * id\"}"),
         "hosts.yml:6: host 'edge-t4': `mlfleet_agent_dir` "),
        ([], "all: [\x1b[2J\n", "hosts.yml:1: not valid YAML: the character \\x1b"),
        (["--tag", "v3"], INVENTORY, "edge-cpu"),  # no mlfleet_registry for its image
    ],
)  # fmt: skip
def test_check_names_the_first_mistake_in_one_line_and_exits_2(
    run, args: List[str], inventory: str, said: str
) -> None:
    code, out, err = run("check", *args, inventory=inventory)
    assert (code, out) == (2, ""), err
    assert err.startswith("error: ") and said in err and err.count("\n") == 1, err
    assert "\x1b" not in err


def test_check_answers_at_once_on_hostile_input(run) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, n in zip("abcdefgh", "bcdefghi")
    )
    for inventory, args, said in [
        (bomb, [], "alias"),  # a billion laughs
        (
            "all:\n  vars:\n    x: " + "[" * 50_000 + "]" * 50_000 + "\n",
            [],
            "nest",
        ),  # nested, nesting: the loader's words
        (INVENTORY, ["--limit", "x," * 100_000 + "x"], "--limit has 100,001 terms"),
    ]:
        started = time.monotonic()
        code, _, err = run("check", *args, inventory=inventory)
        assert code == 2 and err.count("\n") == 1 and said in err, err
        assert time.monotonic() - started < 1.0, err


def test_a_value_that_would_break_the_cron_line_stops_every_command_before_any_host(run) -> None:
    # (The exact words are the inventory's or the cron line's, whichever refuses it first:
    # tests/unit/controller/test_hostops.py has the cron line's.)
    bad = INVENTORY.replace(
        "edge-t4.invalid}", "edge-t4.invalid, mlfleet_python: /usr/bin/python3%}"
    )
    code, out, err = run("status", inventory=bad)
    assert (code, out) == (2, "")  # not 5: no host was tried
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "/hosts.yml:6: host 'edge-t4': `mlfleet_python` " in err and "%" in err, err


def test_debug_shows_a_hosts_traceback_and_the_others_go_on(run) -> None:
    code, out, err = run("--debug", "status", "--json")
    assert code == 5
    assert {h["host"]: h["health"] for h in json.loads(out)["hosts"]} == {
        "edge-cpu": "unreachable", "edge-t4": "unreachable",
    }  # fmt: skip
    assert "debug: edge-cpu failed (unreachable):\nTraceback (most recent call last):" in err
    assert "HostUnreachable: edge-t4: cannot reach edge-t4.invalid:22: " in err
