"""How a model container is hardened by default, and the names its relaxations use (pure,
apart from `host_path_problem`, which looks at the host's files).

By default every model container runs with all capabilities dropped, a read-only root
filesystem (a tmpfs for /tmp), a PID limit and no-new-privileges; the desired state's
`cap_add`, `read_only`, `writable` and `pids_limit` relax or change that, and
`allow_mounts` names the sensitive host paths a release may still mount. The numbers in
brackets are the CIS Docker Benchmark v1.6.0 container-runtime items each rule serves.

Host paths are judged twice: lexically, after normalising (`//etc/../etc/` is `/etc`), by
the desired state's validation on both sides (`sensitive_place`, `env_file_place_problem`);
and on the host, where symbolic links are resolved and the agent's own directory is known
(`host_path_problem`, at the apply's preflight)."""

from __future__ import annotations

import os
import posixpath
import stat
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence

if TYPE_CHECKING:
    from mlfleet.agent.desired import ContainerSpec

# The capabilities Docker knows (moby's list: Linux's CAP_* names without the prefix).
CAPABILITIES = (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "BPF", "CHECKPOINT_RESTORE",
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER",
    "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN",
    "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "PERFMON", "SETFCAP", "SETGID", "SETPCAP",
    "SETUID", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT",
    "SYS_PTRACE", "SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "SYSLOG",
    "WAKE_ALARM",
)  # fmt: skip

# [5.29] Threads count against the limit too: a model server with a thread pool per core
# on a 128-core host needs a few hundred; a fork bomb is stopped well before the host's.
DEFAULT_PIDS_LIMIT = 1024
MAX_PIDS_LIMIT = 4194304  # Linux's highest pid_max: the limit lifted in practice

# [5.13] tmpfs mounts (/tmp, `writable` paths): in memory, counted in the memory limit.
# `exec` because ML JIT compilers (torch.compile/Inductor, Triton, numba) write shared
# objects there and load them; nosuid and nodev as Docker's own default.
TMPFS_OPTIONS = "rw,exec,nosuid,nodev"
TMP = "/tmp"

# [5.6, 5.32] Host paths a release may not mount, the path and everything under it: the
# host's configuration and secrets, kernel interfaces, devices, the engine's socket
# directory (/run and /var/run hold docker.sock) and its data. The agent's own directory
# (credentials, its record) is added on the host; its default is here for load-time checks.
DEFAULT_AGENT_DIR = "/var/lib/mlfleet"
SENSITIVE_TREES = (
    "/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/run", "/var/run", "/var/lib/docker",
    DEFAULT_AGENT_DIR,
)  # fmt: skip
# ...and these exactly (their subdirectories are where data usually lives: /srv, /var/lib/x).
SENSITIVE_EXACT = ("/", "/usr", "/lib", "/lib64", "/bin", "/sbin", "/var", "/var/lib", "/home")
DOCKER_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock")
# Env files: the sensitive paths are refused as for mounts, except this home under /etc.
ENV_FILE_HOME = "/etc/mlfleet"


def normalise(path: str) -> str:
    """The path without `.`, `..`, repeated and trailing slashes: `//etc/../etc/` ->
    `/etc` (lexically: symbolic links are resolved on the host)."""
    out = posixpath.normpath(path)
    # POSIX keeps a leading `//` (implementation-defined); Linux reads it as `/`.
    return "/" + out.lstrip("/") if out.startswith("/") else out


def under(path: str, tree: str) -> bool:
    """Whether normalised `path` is `tree` or inside it (`/etcetera` is not in `/etc`)."""
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def sensitive_place(path: str, extra_trees: Sequence[str] = ()) -> Optional[str]:
    """The sensitive host path `path` is or lies under (after normalising), else None."""
    p = normalise(path)
    for tree in (*SENSITIVE_TREES, *(normalise(t) for t in extra_trees)):
        if under(p, tree):
            return tree
    return p if p in SENSITIVE_EXACT else None


def place_words(path: str, place: str) -> str:
    """`is /etc`, `is under /etc` or `is the Docker socket (...)`, for messages."""
    p = normalise(path)
    if p in DOCKER_SOCKETS:
        return "is the Docker socket (whoever reaches it controls the host)"
    return f"is {place}" if p == place else f"is under {place}"


def allowed(path: str, allow: Iterable[str]) -> bool:
    """Whether the playbook names `path` (normalised) in `allow_mounts`."""
    p = normalise(path)
    return any(p == normalise(a) for a in allow)


def mount_place_problem(
    source: str, allow: Sequence[str], extra_trees: Sequence[str] = ()
) -> Optional[str]:
    """Why a mount of host path `source` is refused, completing a sentence about it ("is
    under /etc, a sensitive host path; ..."), else None: a sensitive path that `allow`
    does not name."""
    place = sensitive_place(source, extra_trees)
    if place is None or allowed(source, allow):
        return None
    return (
        f"{place_words(source, place)}, a sensitive host path; name"
        f" {normalise(source)} in container.allow_mounts if the model really needs it"
    )


def env_file_place_problem(
    path: str, allow: Sequence[str], extra_trees: Sequence[str] = ()
) -> Optional[str]:
    """Why `path` may not be an env file, completing a sentence about it, else None: the
    sensitive paths of mounts, except files under /etc/mlfleet/ (the agent reads the file
    and hands every KEY=value line to the model: a host secret there would reach it)."""
    p = normalise(path)
    home = under(p, ENV_FILE_HOME) and p != ENV_FILE_HOME
    if home and not any(under(p, normalise(t)) for t in extra_trees):
        return None
    place = sensitive_place(path, extra_trees)
    if place is None or allowed(path, allow):
        return None
    return (
        f"{place_words(path, place)}, a sensitive host path; keep env files in"
        f" {ENV_FILE_HOME}/ or outside the sensitive paths (or name {p} in"
        " container.allow_mounts)"
    )


def env_file_owner_problem(path: str, uid: int, mode: int, agent_uid: int) -> Optional[str]:
    """Why the agent will not read an env file with this owner and mode: it must be a
    regular file owned by root or the agent's own user and writable by nobody else (a
    local user who could write it would choose the model's environment: LD_PRELOAD)."""
    if not stat.S_ISREG(mode):
        return f"env file {path} is not a regular file"
    if uid not in (0, agent_uid):
        return (
            f"env file {path} is owned by uid {uid}, not root or the agent's user"
            f" (uid {agent_uid}); chown root {path}"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"env file {path} is writable by its group or others (mode"
            f" {stat.S_IMODE(mode):04o}); chmod go-w {path}"
        )
    return None


def host_path_problem(spec: ContainerSpec, agent_dir: str) -> Optional[str]:
    """On the host, before anything runs: each mount source and the env file with symbolic
    links resolved and the agent's own directory among the sensitive paths, then the env
    file's owner and mode. One line naming the path, else None. A missing path is not
    judged here (the preflight's own check names it)."""
    trees = (normalise(agent_dir), os.path.realpath(agent_dir))
    for mount in spec.mounts:
        problem = _judged(mount.source, lambda p: mount_place_problem(p, spec.allow_mounts, trees))
        if problem:
            return f"mount source {problem}"
    if not spec.env_file:
        return None
    problem = _judged(spec.env_file, lambda p: env_file_place_problem(p, spec.allow_mounts, trees))
    if problem:
        return f"env file {problem}"
    try:
        st = os.stat(spec.env_file)
    except OSError:
        return None
    return env_file_owner_problem(spec.env_file, st.st_uid, st.st_mode, os.geteuid())


def _judged(path: str, problem_of: Callable[[str], Optional[str]]) -> Optional[str]:
    """`path` as written, then where its links lead: "PATH is under /etc, ..." or "PATH
    links to REAL, which is under /etc, ..."."""
    problem = problem_of(path)
    if problem:
        return f"{path} {problem}"
    real = os.path.realpath(path)
    if real != normalise(path):
        problem = problem_of(real)
        if problem:
            return f"{path} links to {real}, which {problem}"
    return None
