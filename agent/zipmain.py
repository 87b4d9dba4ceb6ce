"""The agent zipapp's entry point: the bundle writes this file as its `__main__.py`.

Python compiles every module it imports from a zip archive again on every start (it cannot
write bytecode into the archive): about 50 ms of CPU for each agent command and cron tick,
paid again every minute on a small edge CPU. So the first run unpacks the archive into
`cache/<python>-<crc>-<size>/` beside it and imports from there, where Python keeps the
bytecode of what it compiles as usual: each module is compiled once, when first needed (a
compile of everything up front would double the first run's CPU). One directory per
(archive, Python) pair, written under a temporary name and renamed into place, so a
half-written cache is never used; the three newest are kept. Whatever goes wrong here (a
read-only disk, no room), the agent runs from the archive as it always did.

Python 3.8 compatible and stdlib only: this runs before anything else of the agent."""

import os
import sys

KEEP = 3  # cache directories kept: the current one and the two before it
_DONE = "complete"


def _key(archive: str) -> str:
    import zlib

    with open(archive, "rb") as f:
        data = f.read()
    return f"{sys.implementation.cache_tag}-{zlib.crc32(data):08x}-{len(data)}"


def _unpack(archive: str, base: str, target: str) -> bool:
    import shutil
    import tempfile
    import zipfile

    os.makedirs(base, mode=0o700, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=base)
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        open(os.path.join(tmp, _DONE), "w").close()
        if os.path.isdir(target) and not os.path.isfile(os.path.join(target, _DONE)):
            shutil.rmtree(target, ignore_errors=True)  # not ours: every cache is renamed in whole
        try:
            os.rename(tmp, target)
        except OSError:  # another run of the agent put it there first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(base)
    return os.path.isfile(os.path.join(target, _DONE))


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
    """The cache directory to import the agent from ("" to import from the archive)."""
    if sys.dont_write_bytecode or not sys.implementation.cache_tag or not os.path.isfile(archive):
        return ""
    base = os.path.join(os.path.dirname(os.path.abspath(archive)), "cache")
    target = os.path.join(base, _key(archive))
    if os.path.isfile(os.path.join(target, _DONE)) or _unpack(archive, base, target):
        return target
    return ""


def main() -> None:
    try:
        code = cached_code(sys.argv[0])
    except Exception:  # the cache is an optimisation, never a failure
        code = ""
    if code:
        sys.path.insert(0, code)
    from mlfleet.agent.cli import main as agent_main

    raise SystemExit(agent_main())


if __name__ == "__main__":
    main()
