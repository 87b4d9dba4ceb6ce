"""The agent zipapp unpacks itself, compiled, beside the archive on its first run and imports
from there afterwards, only once the cache proved it holds the archive's code and no one
else can change it; whatever stops that, it still runs from the archive. Real zipapps run
by a real Python (the one running the tests, without `site`, as the controller runs them)."""

from __future__ import annotations

import hashlib
import json
import os
import py_compile
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from mlfleet.agent import zipmain
from mlfleet.agent.bundle import build_zipapp, bundle_files

MALICE = "raise SystemExit('code that is not the archive ran')\n"


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


def _caches(agent_dir: Path) -> List[str]:
    return sorted(p.name for p in (agent_dir / "cache").iterdir())


def _cache_of(archive: Path) -> Path:
    """Where the cache of this very archive is (named by its SHA-256)."""
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    return archive.parent / "cache" / f"{sys.implementation.cache_tag}-{digest}"


def _archive_bytes(archive: Path, name: str) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        return zf.read(name)


def _modes(top: Path) -> Dict[str, str]:
    return {str(p.relative_to(top)): oct(p.stat().st_mode & 0o777) for p in top.rglob("*")}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One agent build and the cache its first run made, copied by each test that needs
    them (unpacking compiles every module: a quarter of a second each time)."""
    archive = build_zipapp(tmp_path_factory.mktemp("pristine") / "agent").path
    _version(archive)
    return archive


@pytest.fixture
def archive(tmp_path: Path, pristine: Path) -> Path:
    """A fresh agent directory holding the agent and nothing else."""
    (tmp_path / "agent").mkdir(mode=0o700)
    return Path(shutil.copy2(pristine, tmp_path / "agent"))


@pytest.fixture
def cached(archive: Path, pristine: Path) -> Path:
    """The agent's directory after its first run: the cache of this archive, in place."""
    shutil.copytree(pristine.parent / "cache", archive.parent / "cache")
    return _cache_of(archive)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """zipmain.cached_code called here as the agent's start would (Python may write bytecode)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


SMALL = ("__main__.py", "mlfleet/__init__.py", "mlfleet/agent/__init__.py", "mlfleet/agent/cli.py")


@pytest.fixture
def small(tmp_path: Path, in_process: None) -> Path:
    """The cache of an archive of a few of the agent's files (quick to compile), made by
    zipmain as the agent's first run makes it."""
    home = tmp_path / "agent"
    home.mkdir(mode=0o700)
    archive = home / "mlfleet-agent.pyz"
    files = bundle_files()
    with zipfile.ZipFile(archive, "w") as zf:
        for name in SMALL:
            zf.writestr(name, files[name])
    code = zipmain.cached_code(str(archive))
    assert code == str(_cache_of(archive))
    return Path(code)


def test_the_first_run_unpacks_and_compiles_a_private_cache_the_next_runs_import(
    archive: Path,
) -> None:
    first = _version(archive)
    code = Path(first["code"])
    assert code == _cache_of(archive)
    assert (code / zipmain.MANIFEST).is_file()
    # Everything compiled up front, what `version` never imports too: later runs compile
    # nothing and write nothing into the checked cache.
    assert list(code.glob("mlfleet/agent/__pycache__/cli.*.pyc"))
    assert list(code.glob("mlfleet/agent/detect/__pycache__/host_facts.*.pyc"))
    modes = _modes(code)
    assert {m for p, m in modes.items() if (code / p).is_dir()} == {"0o700"}
    assert {m for p, m in modes.items() if (code / p).is_file()} == {"0o600"}
    assert oct(code.stat().st_mode & 0o777) == "0o700"
    manifest_inode = (code / zipmain.MANIFEST).stat().st_ino
    detect = _run(archive, "detect", "--json")
    assert detect.returncode == 0, detect.stderr
    assert json.loads(detect.stdout)["arch"] == os.uname().machine
    assert _version(archive)["code"] == str(code)
    assert (code / zipmain.MANIFEST).stat().st_ino == manifest_inode  # used, not unpacked again
    assert _modes(code) == modes  # nothing was added to it
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


def test_a_new_agent_gets_its_own_cache_and_only_the_three_newest_are_kept(small: Path) -> None:
    archive = small.parent.parent / "mlfleet-agent.pyz"
    older = [small.parent / f"{sys.implementation.cache_tag}-{n:064x}" for n in (1, 2)]
    for n, cache in enumerate([*older, small]):
        cache.mkdir(exist_ok=True)
        os.utime(cache, (1_000_000 + n, 1_000_000 + n))
    _new_release(archive, 1)
    newest = zipmain.cached_code(str(archive))
    assert newest not in ("", str(small))
    assert _caches(archive.parent) == sorted([older[1].name, small.name, Path(newest).name])


def test_a_cache_that_cannot_be_written_leaves_the_agent_running_from_the_archive(
    archive: Path,
) -> None:
    (archive.parent / "cache").write_text("not a directory")
    assert _version(archive)["code"] == str(archive)
    assert _run(archive, "detect", "--json").returncode == 0


def _tamper_source(code: Path) -> None:
    (code / "mlfleet" / "agent" / "cli.py").write_text(MALICE)


def _tamper_bytecode(code: Path) -> None:
    """A cli pyc that runs other code, made as Python makes one (the source is left as it is)."""
    evil = code.parent / "evil.py"
    evil.write_text(MALICE)
    (pyc,) = code.glob("mlfleet/agent/__pycache__/cli.*.pyc")
    py_compile.compile(str(evil), cfile=str(pyc),
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)  # fmt: skip
    pyc.chmod(0o600)  # refused for what it holds, not for its mode
    evil.unlink()


def _shadow_stdlib(code: Path) -> None:
    """A module of the standard library's name where the agent's imports look first."""
    (code / "json.py").write_text(MALICE)
    (code / "json.py").chmod(0o600)  # refused for being there, not for its mode


def _half_written(code: Path) -> None:
    (code / zipmain.MANIFEST).unlink()
    (code / "mlfleet" / "agent" / "cli.py").write_text(MALICE)


def _group_writable(code: Path) -> None:
    (code / "mlfleet" / "agent" / "cli.py").chmod(0o620)


def _of_another_user(code: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    os.chown(code / "mlfleet" / "agent" / "cli.py", 65534, 65534)


def _a_link(code: Path) -> None:
    """cli.py a link to a file elsewhere (whoever can write that one changes the agent)."""
    elsewhere = code.parent.parent / "cli.py"
    (code / "mlfleet" / "agent" / "cli.py").rename(elsewhere)
    (code / "mlfleet" / "agent" / "cli.py").symlink_to(elsewhere)


SPOILS = [_tamper_source, _tamper_bytecode, _shadow_stdlib, _half_written, _group_writable,
          _of_another_user, _a_link]  # fmt: skip


@pytest.mark.parametrize("spoil", SPOILS)
def test_a_cache_that_fails_its_check_is_refused_and_replaced(small: Path, spoil: Any) -> None:
    cached = small
    archive = cached.parent.parent / "mlfleet-agent.pyz"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    spoil(cached)
    assert not zipmain._intact(str(cached), digest)
    assert zipmain.cached_code(str(archive)) == str(cached)  # a fresh one, in its place
    assert zipmain._intact(str(cached), digest)
    cli = cached / "mlfleet" / "agent" / "cli.py"
    assert not cli.is_symlink() and cli.stat().st_uid == os.geteuid()
    assert cli.read_bytes() == _archive_bytes(archive, "mlfleet/agent/cli.py")
    assert not (cached / "json.py").exists()
    assert _caches(archive.parent) == [cached.name]  # the refused one is gone


def test_a_tampered_cache_never_runs(cached: Path) -> None:
    """End to end: the agent started after its cached bytecode was replaced runs the
    archive's code (from a fresh cache)."""
    _tamper_bytecode(cached)
    archive = cached.parent.parent / "mlfleet-agent.pyz"
    proc = _run(archive, "version", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["code"] == str(cached)


def _plant(cached: Path, base_mode: int) -> None:
    """Someone else's cache for this very archive, consistent with its own manifest (their
    cli.py, its bytecode removed), under a cache/ directory with `base_mode`."""
    archive = cached.parent.parent / "mlfleet-agent.pyz"
    (cached / "mlfleet" / "agent" / "cli.py").write_text(MALICE)
    for pyc in cached.glob("mlfleet/agent/__pycache__/cli.*.pyc"):
        pyc.unlink()
    (cached / zipmain.MANIFEST).unlink()
    files = zipmain._tree(str(cached))
    assert files is not None
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (cached / zipmain.MANIFEST).write_text(json.dumps({"archive_sha256": digest, "files": files}))
    (cached / zipmain.MANIFEST).chmod(0o600)
    cached.parent.chmod(base_mode)


def test_a_cache_directory_others_could_write_to_is_never_used(cached: Path) -> None:
    _plant(cached, 0o777)
    archive = cached.parent.parent / "mlfleet-agent.pyz"
    proc = _run(archive, "version", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["code"] == str(cached)  # a fresh one, unpacked there
    assert (cached / "mlfleet" / "agent" / "cli.py").read_bytes() == _archive_bytes(
        archive, "mlfleet/agent/cli.py"
    )
    assert oct(cached.parent.stat().st_mode & 0o777) == "0o700"
    assert sorted(p.name for p in archive.parent.iterdir()) == ["cache", archive.name]


def test_the_same_planted_cache_in_a_private_directory_passes_its_check(small: Path) -> None:
    """The control of the test above: what it refuses is refused for its directory's mode
    alone (a manifest is only as good as who can write it: the agent's user)."""
    _plant(small, 0o700)
    archive = small.parent.parent / "mlfleet-agent.pyz"
    assert zipmain.cached_code(str(archive)) == str(small)
    assert (small / "mlfleet" / "agent" / "cli.py").read_text() == MALICE


def test_an_agent_directory_others_can_write_to_gets_no_cache(
    archive: Path, in_process: None
) -> None:
    archive.parent.chmod(0o777)
    assert zipmain.cached_code(str(archive)) == ""
    assert not (archive.parent / "cache").exists()
