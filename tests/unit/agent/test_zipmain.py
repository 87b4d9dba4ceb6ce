"""The agent zipapp unpacks itself, compiled, beside the archive on its first run and imports
from there afterwards; whatever stops that, it still runs from the archive. Real zipapps run
by a real Python (the one running the tests, without `site`, as the controller runs them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from mlfleet.agent.bundle import build_zipapp


def _run(
    archive: Path, *args: str, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    if env is None:  # as in a cron job or an SSH session: Python writes bytecode
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.run([sys.executable, "-S", str(archive), *args],
                          capture_output=True, text=True, timeout=60, env=env)  # fmt: skip


def _version(archive: Path, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    proc = _run(archive, "version", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _caches(agent_dir: Path) -> list:
    return sorted(p.name for p in (agent_dir / "cache").iterdir())


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return build_zipapp(tmp_path / "agent").path


def test_the_second_run_imports_compiled_code_from_the_cache(archive: Path) -> None:
    first = _version(archive)
    code = Path(first["code"])
    assert code.parent == archive.parent / "cache"
    assert (code / "complete").is_file()
    assert list(code.glob("mlfleet/agent/__pycache__/cli.*.pyc"))
    assert oct(code.stat().st_mode & 0o777) == "0o700"
    assert list(code.glob("mlfleet/agent/detect/__pycache__/host_facts.*.pyc")) == []
    assert _version(archive)["code"] == str(code)
    detect = _run(archive, "detect", "--json")
    assert detect.returncode == 0, detect.stderr
    assert json.loads(detect.stdout)["arch"] == os.uname().machine
    assert list(code.glob("mlfleet/agent/detect/__pycache__/host_facts.*.pyc"))
    assert _caches(archive.parent) == [code.name]


def test_where_python_is_told_not_to_write_bytecode_the_agent_runs_from_the_archive(
    archive: Path,
) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    assert _version(archive, env)["code"] == str(archive)
    assert not (archive.parent / "cache").exists()


def _new_release(archive: Path, n: int) -> None:
    """Another agent build: different bytes, so a different cache."""
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(f"release-{n}.txt", str(n))


def test_a_new_agent_gets_its_own_cache_and_only_the_three_newest_are_kept(
    archive: Path,
) -> None:
    seen = []
    for n in range(4):
        if n:
            _new_release(archive, n)
        seen.append(Path(_version(archive)["code"]).name)
        os.utime(archive.parent / "cache" / seen[-1], (1_000_000 + n, 1_000_000 + n))
    assert len(set(seen)) == 4
    assert _caches(archive.parent) == sorted(seen[1:])


def test_a_cache_that_cannot_be_written_leaves_the_agent_running_from_the_archive(
    archive: Path,
) -> None:
    (archive.parent / "cache").write_text("not a directory")
    assert _version(archive)["code"] == str(archive)
    assert _run(archive, "detect", "--json").returncode == 0


def test_a_cache_directory_left_incomplete_is_replaced(archive: Path) -> None:
    code = Path(_version(archive)["code"])
    (code / "complete").unlink()
    (code / "mlfleet" / "agent" / "cli.py").write_text("raise SystemExit('half-written')\n")
    assert _version(archive)["code"] == str(code)
    assert (code / "complete").is_file()
    stale = archive.parent / "cache" / ".tmp-dead"
    stale.mkdir()
    os.utime(stale, (1_000_000, 1_000_000))
    _new_release(archive, 1)
    _version(archive)
    assert not stale.exists()
