"""The agent zipapp's entry point: the bundle writes this file as its `__main__.py`.

Python compiles every module it imports from a zip archive again on every start (it cannot
write bytecode into the archive): about 50 ms of CPU for each agent command and cron tick,
paid again every minute on a small edge CPU. So the first run unpacks the archive into
`cache/<python>-<sha256 of the archive>/` beside it, compiles every module there once, and
later runs import from there.

The code that runs is the archive's, whose SHA-256 the controller checked: the cache is
trusted only when it proves it. Its directory is named by the archive's SHA-256 and holds a
manifest (written last, when it was unpacked) of the SHA-256 of every file in it, sources
and compiled bytecode alike; before anything is imported from it, every file is checked
against the manifest, no other file may be there (one would shadow a module of the standard
library), and the agent's user must own every file and directory in it, with no permission
for group or others. Python is then told to write no bytecode there (what runs was checked).
A cache that fails any of that is never used: a fresh one is unpacked into a new private
directory and renamed into place. A cache directory someone else made, or opened to others,
is moved away whole. Where the agent's own directory is open for others to write in, there
is no cache (the agent tightens its directory, and the next run has one).

Unpacked and renamed into place whole, so a half-written cache is never used; the three
newest are kept (an agent still running from the one before keeps its modules). Whatever
goes wrong here (a read-only disk, no room), the agent runs from the archive as it always
did.

Python 3.8 compatible and stdlib only: this runs before anything else of the agent."""

from __future__ import annotations

import os
import stat
import sys
from typing import Dict, Optional

KEEP = 3  # cache directories kept: the current one and the two before it
MANIFEST = "manifest.json"  # written last: a cache without it is not complete
PRIVATE_UMASK = 0o077  # as the agent's cli sets it (agent/private_dir.py)
_CHUNK = 1 << 20


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _private(info: os.stat_result) -> bool:
    """Owned by the agent's user, no permission for group or others, not a link."""
    return (
        info.st_uid == os.geteuid() and not stat.S_ISLNK(info.st_mode) and not info.st_mode & 0o077
    )


def _tree(top: str) -> Optional[Dict[str, str]]:
    """path under `top` -> its SHA-256, for every file in it; None when a file or directory
    is not private (agent's own, 0700 / 0600), or is neither a file nor a directory."""
    files: Dict[str, str] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(top, rel)))
        except OSError:
            return None
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            info = entry.stat(follow_symlinks=False)
            if not _private(info):
                return None
            if stat.S_ISDIR(info.st_mode):
                pending.append(name)
            elif stat.S_ISREG(info.st_mode):
                files[name] = _sha256(entry.path)
            else:
                return None
    return files


def _intact(target: str, archive_sha256: str) -> bool:
    """The cache holds exactly what its manifest lists, unchanged, for this archive, and
    only the agent's user can change it."""
    import json

    try:
        info = os.lstat(target)
        if not (stat.S_ISDIR(info.st_mode) and _private(info)):
            return False
        with open(os.path.join(target, MANIFEST), "rb") as fh:
            manifest = json.loads(fh.read())
        found = _tree(target)
    except (OSError, ValueError):
        return False
    if found is None or not isinstance(manifest, dict):
        return False
    listed = manifest.get("files")
    found.pop(MANIFEST, None)
    return manifest.get("archive_sha256") == archive_sha256 and listed == found


def _own_base(base: str) -> bool:
    """`cache/` exists and is the agent's alone; one made by someone else, or opened to
    others, is moved out of the way whole (what is in it was never checked). False when it
    cannot be had (a file in its place, a read-only disk)."""
    import shutil

    try:
        info: Optional[os.stat_result] = os.lstat(base)
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode) and _private(info):
        return True
    if info is not None and (stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        aside = f"{base}.refused-{os.getpid()}"
        try:
            os.rename(base, aside)
        except OSError:
            pass  # another run moved it first
        if os.path.islink(aside):
            os.unlink(aside)
        else:
            shutil.rmtree(aside, ignore_errors=True)  # what is not ours may stay: never used
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(base)
    return stat.S_ISDIR(info.st_mode) and _private(info)


def _unpack(archive: str, base: str, target: str, archive_sha256: str) -> None:
    """Unpack and compile the archive into a new private directory, list every file in its
    manifest, then rename it into place (whatever was there before goes)."""
    import importlib.util
    import json
    import py_compile
    import shutil
    import tempfile
    import zipfile

    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=base)
    aside = f"{tmp}-old"
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                parts = member.filename.split("/")
                if member.is_dir():
                    continue
                if any(p in ("", ".", "..") or "\\" in p for p in parts):
                    raise ValueError(f"unexpected member {member.filename!r}")
                path = os.path.join(tmp, *parts)
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with open(fd, "wb") as fh:
                    fh.write(zf.read(member))
                if path.endswith(".py"):
                    try:
                        py_compile.compile(
                            path,
                            cfile=importlib.util.cache_from_source(path),
                            dfile=os.path.join(target, *parts),  # what tracebacks name
                            doraise=True,
                            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
                        )
                    except py_compile.PyCompileError:
                        pass  # compiled, in memory, whenever it is imported
        for directory, _, names in os.walk(tmp):
            os.chmod(directory, 0o700)
            for name in names:
                os.chmod(os.path.join(directory, name), 0o600)
        files = _tree(tmp)
        if files is None:
            return
        fd = os.open(os.path.join(tmp, MANIFEST), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w") as fh:
            json.dump({"archive_sha256": archive_sha256, "files": files}, fh, sort_keys=True)
        try:
            os.rename(target, aside)  # one that failed its check
        except OSError:
            pass  # there was none
        try:
            os.rename(tmp, target)
        except OSError:
            pass  # another run of the agent put one there first: it is checked like any
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(aside, ignore_errors=True)


def _prune(base: str) -> None:
    import shutil
    import time

    entries = []
    for name in os.listdir(base):
        path = os.path.join(base, name)
        try:
            entries.append((os.stat(path).st_mtime, name, path))
        except OSError:
            continue
    done = sorted((e for e in entries if not e[1].startswith(".tmp-")), reverse=True)
    # Leftovers of an unpack that died, and caches of agents three versions back.
    stale = [e for e in entries if e[1].startswith(".tmp-") and e[0] < time.time() - 3600]
    for _, _, path in stale + done[KEEP:]:
        shutil.rmtree(path, ignore_errors=True)


def cached_code(archive: str) -> str:
    """The checked cache directory to import the agent from ("" to import from the
    archive)."""
    if sys.dont_write_bytecode or not sys.implementation.cache_tag or not os.path.isfile(archive):
        return ""
    home = os.path.dirname(os.path.abspath(archive))
    mode = os.stat(home)
    if mode.st_uid not in (os.geteuid(), 0) or mode.st_mode & 0o022:
        return ""  # others could put a cache of their own in place under our feet
    digest = _sha256(archive)
    base = os.path.join(home, "cache")
    if not _own_base(base):
        return ""
    target = os.path.join(base, f"{sys.implementation.cache_tag}-{digest}")
    if _intact(target, digest):
        return target
    _unpack(archive, base, target, digest)
    _prune(base)
    return target if _intact(target, digest) else ""


def main() -> None:
    os.umask(PRIVATE_UMASK)  # before anything is written: the cache too is the agent's alone
    try:
        code = cached_code(sys.argv[0])
    except Exception:  # the cache is an optimisation, never a failure
        code = ""
    if code:
        sys.path.insert(0, code)
        sys.dont_write_bytecode = True  # what is imported from there was checked: kept so
    from mlfleet.agent.cli import main as agent_main

    raise SystemExit(agent_main())


if __name__ == "__main__":
    main()
