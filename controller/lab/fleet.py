"""Bring a lab up, inspect it, take it down.

`up` is idempotent: a lab that already runs the same profiles is left as it is; anything
else (a different profile set, a crashed run's leftovers) is swept away first. A failure
half-way sweeps away what this run made, so nothing is left half-created.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from mlfleet.controller.errors import LabError
from mlfleet.controller.lab import images, lab_registry, neighbours, network, registry_tls
from mlfleet.controller.lab.hardware import (
    driver_vendors,
    remove_root,
    render_root,
    unloaded_entries,
    write_root,
)
from mlfleet.controller.lab.layout import LabLayout
from mlfleet.controller.lab.model_data import write_model
from mlfleet.controller.lab.processes import (
    alive,
    cmdline,
    kill_all,
    kill_cgroups,
    pids_mentioning,
    run,
    start_daemon,
    stop_pid,
    terminate_all,
    wait_until,
)
from mlfleet.controller.lab.profiles import HostProfile, LabSpec

REGISTRY_PORT = lab_registry.REGISTRY_PORT
SSH_USER = "root"
Progress = Callable[[str], None]

# Debian packages that provide each program the lab runs.
REQUIRED_PROGRAMS = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "dockerd": "docker.io",
    "docker": "docker.io",
    "busybox": "busybox-static",
    "debootstrap": "debootstrap",
    "docker-registry": "docker-registry",
    "iptables": "iptables",
    "tc": "iproute2",
    "ss": "iproute2",
    "mkfs.ext4": "e2fsprogs",
    "tar": "tar",
}


def check_system() -> None:
    """Stop at once, with one line, when the lab cannot run here."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, engines, mounts)",
                       hint="run it as root, e.g. with sudo")  # fmt: skip
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = sorted(
        {pkg for prog, pkg in REQUIRED_PROGRAMS.items() if not shutil.which(prog, path=path)}
    )
    if missing:
        raise LabError("missing system packages: " + " ".join(missing),
                       hint="apt-get install -y " + " ".join(missing))  # fmt: skip


def _fingerprint(spec: LabSpec) -> str:
    return json.dumps(
        {
            "subnet": str(spec.subnet),
            "registry": spec.registry,
            "hosts": [asdict(h) for h in spec.hosts],
        },
        sort_keys=True,
    )


def read_state(layout: LabLayout) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return None


def _write_state(layout: LabLayout, state: Dict[str, Any]) -> None:
    tmp = layout.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(layout.state_file)


def host_health(layout: LabLayout, host: Dict[str, Any]) -> Dict[str, bool]:
    pids = host["pids"]
    health = {"sshd": alive(pids.get("sshd"))}
    if host["profile"].get("cron", True):
        health["crond"] = alive(pids.get("crond"))
    if host["profile"].get("engine", True):
        health["dockerd"] = alive(pids.get("dockerd")) and _engine_answers(
            layout.docker_socket(host["name"])
        )
    return health


def _healthy(layout: LabLayout, state: Dict[str, Any]) -> bool:
    if not alive(state["registry"].get("pid")):
        return False
    if not network.interface_exists(layout.bridge):
        return False
    return all(all(host_health(layout, h).values()) for h in state["hosts"])


@contextlib.contextmanager
def _exclusive(layout: LabLayout, progress: Optional[Progress] = None) -> Iterator[None]:
    """One `lab up`/`down`/`engine` at a time per lab; a second one waits its turn."""
    layout.run_root.mkdir(parents=True, exist_ok=True)
    with open(layout.run_root / f"{layout.name}.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                progress(f"waiting for another command on lab {layout.name!r} to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


# --- up ----------------------------------------------------------------------------------


def up(layout: LabLayout, spec: LabSpec, progress: Progress) -> Dict[str, Any]:
    """Bring the lab up (or leave it, when it already runs these profiles); returns state."""
    check_system()
    with _exclusive(layout, progress):
        return _up(layout, spec, progress)


def _up(layout: LabLayout, spec: LabSpec, progress: Progress) -> Dict[str, Any]:
    state = read_state(layout)
    if state and state.get("fingerprint") == _fingerprint(spec) and _healthy(layout, state):
        progress(f"lab {layout.name!r} is already up with these profiles")
        return state
    if state or _leftovers(layout):
        progress(f"cleaning up what an earlier run of lab {layout.name!r} left")
    _down(layout)
    _check_subnet_free(spec.subnet, layout)
    base = images.base_layer(layout.cache, progress)  # slow once; before anything is created
    started = time.monotonic()
    try:
        state = _create(layout, spec, progress)
    except BaseException:
        progress("lab up failed; removing what it made")
        _down(layout)
        raise
    state["base_layer"] = base.digest
    _write_state(layout, state)
    progress(
        f"lab {layout.name!r} up: {len(spec.hosts)} hosts in {time.monotonic() - started:.1f}s"
    )
    return state


def _check_subnet_free(subnet: ipaddress.IPv4Network, layout: LabLayout) -> None:
    out = run(["ip", "-o", "-4", "addr", "show"], check=False)
    for line in out.splitlines():
        fields = line.split()
        if "inet" not in fields:
            continue
        iface = fields[1]
        net = ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).network
        if iface != layout.bridge and net.overlaps(subnet):
            raise LabError(
                f"subnet {subnet} overlaps {net} on interface {iface}",
                hint="choose another `subnet:` in the profiles file",
            )


def _create(layout: LabLayout, spec: LabSpec, progress: Progress) -> Dict[str, Any]:
    for d in (layout.base, layout.run, layout.ssh_dir, layout.registry_dir):
        d.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    _keygen(layout.ssh_key, f"mlfleet-lab-{layout.name}")
    (layout.ssh_dir / "authorized_keys").write_text(layout.ssh_key.with_suffix(".pub").read_text())
    ctrl = spec.controller_address
    raised = neighbours.reserve(layout.name, len(spec.hosts), layout.run_root / "neighbours.json")
    if raised:
        progress(f"neighbour table raised for {len(spec.hosts)} hosts: {raised}")
    network.create_bridge(layout.bridge, ctrl, spec.subnet.prefixlen)
    registry_state = lab_registry.start(layout, ctrl, secure=spec.registry == "secure")
    registry = lab_registry.client(registry_state)
    wait_until(registry.ping, 15, f"registry at {registry.address}")

    progress(f"starting {len(spec.hosts)} hosts (sshd, dockerd, crond each)")
    with ThreadPoolExecutor(max_workers=8) as pool:
        push = pool.submit(images.build_and_push, registry, layout.cache, progress)
        hosts = list(
            pool.map(lambda ih: _create_host(layout, spec, ih[0], ih[1]), enumerate(spec.hosts))
        )
        refs = push.result()
    known = "".join(f"{h['address']} {h['host_key']}\n" for h in hosts)
    layout.known_hosts.write_text(known)
    return {
        "name": layout.name,
        "fingerprint": _fingerprint(spec),
        "profiles": spec.source,
        "subnet": str(spec.subnet),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "registry": dict(registry_state, images=refs),
        "ssh_key": str(layout.ssh_key),
        "known_hosts": str(layout.known_hosts),
        "hosts": hosts,
    }


def _keygen(path: Path, comment: str) -> None:
    if not path.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _create_host(
    layout: LabLayout, spec: LabSpec, index: int, profile: HostProfile
) -> Dict[str, Any]:
    name = profile.name
    hdir, hrun = layout.host_dir(name), layout.host_run(name)
    for d in (hdir, hrun, layout.agent_dir(name), layout.cron_dir(name)):
        d.mkdir(parents=True, exist_ok=True)
    root = layout.root(name)
    write_root(root, render_root(profile))
    write_model(layout.data_dir(name))
    (layout.cron_dir(name) / "root").touch()
    _keygen(hdir / "ssh_host_ed25519_key", name)
    host_key = " ".join((hdir / "ssh_host_ed25519_key.pub").read_text().split()[:2])

    address, netns, veth = spec.address(index), layout.netns(name), layout.veth(name)
    network.create_host_netns(netns, veth, layout.bridge, address, spec.subnet.prefixlen)
    if profile.link_kbit:
        network.rate_limit(netns, veth, profile.link_kbit)
    if not profile.registry:
        network.block_tcp(netns, spec.controller_address, REGISTRY_PORT)
    # The file pins the host's UTS namespace (its hostname): it outlives a `lab reboot`.
    uts = hrun / "uts"
    uts.touch()
    run(["unshare", f"--uts={uts}", "hostname", name])

    if profile.engine:
        if profile.docker_disk_mib:
            network.make_loop_disk(
                hdir / "docker.img", layout.docker_root(name), profile.docker_disk_mib
            )
        _write_daemon_json(layout, spec, profile)
    return {
        "name": name,
        "address": address,
        "netns": netns,
        "veth": veth,
        "host_key": host_key,
        "profile": asdict(profile),
        "pids": _boot(layout, profile, address, netns),
    }


def _boot(layout: LabLayout, profile: HostProfile, address: str, netns: str) -> Dict[str, int]:
    """Start what the host runs at boot (engine, sshd, crond) and wait for sshd and the
    engine to answer; returns their pids. Also what `lab reboot` starts again."""
    name = profile.name
    uts = layout.host_run(name) / "uts"
    pids: Dict[str, int] = {}
    if profile.engine:
        pids["dockerd"] = _spawn_dockerd(layout, name, netns)
    pids["sshd"] = _start_sshd(layout, profile, address, netns, uts)
    if profile.cron:
        pids["crond"] = _start_crond(layout, name, netns, uts)
    wait_until(lambda: _sshd_listens(layout, name, address, netns), 15, f"sshd on {name}")
    if profile.engine:
        sock = layout.docker_socket(name)
        wait_until(lambda: _engine_answers(sock), 60, f"docker engine on {name}")
    return pids


def _sshd_listens(layout: LabLayout, name: str, address: str, netns: str) -> bool:
    """sshd answers on port 22: seen from the controller, or, while the host's link is cut
    (`lab link HOST down`), from inside the host."""
    if network.link_is_up(layout.veth(name)):
        return _port_open(address, 22)
    return network.listening(netns, address, 22)


def _engine_env(layout: LabLayout, name: str) -> Dict[str, str]:
    # The host's own /usr/bin comes first: there the engine finds the toolkit's hook, as on
    # a real host with the NVIDIA container toolkit installed.
    path = f"{layout.root(name) / 'usr/bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return {"PATH": path, "HOME": "/root"}


def _write_daemon_json(layout: LabLayout, spec: LabSpec, profile: HostProfile) -> None:
    name = profile.name
    hdir, hrun = layout.host_dir(name), layout.host_run(name)
    config: Dict[str, Any] = {
        "data-root": str(layout.docker_root(name)),
        "exec-root": str(hrun / "exec"),
        "hosts": [layout.docker_host(name)],
        "pidfile": str(hrun / "dockerd.pid"),
        # An open lab registry speaks plain HTTP; a secure one is trusted through certs.d.
        "insecure-registries": (
            [f"{spec.controller_address}:{REGISTRY_PORT}"] if spec.registry == "open" else []
        ),
        # Each engine its own identity (the default key lives in the shared /etc/docker).
        "deprecated-key-path": str(hdir / "docker-key.json"),
        "cgroup-parent": f"/{layout.cgroup_prefix}{name}",
        # Should a system containerd be running, engines sharing it must not share state.
        "containerd-namespace": f"{layout.cgroup_prefix}{name}",
        "containerd-plugins-namespace": f"{layout.cgroup_prefix}{name}-plugins",
        "log-level": "warn",
    }
    if profile.jetson and profile.container_toolkit:
        config["runtimes"] = {
            "nvidia": {"path": str(layout.root(name) / "usr/bin/nvidia-container-runtime")}
        }
    (hdir / "daemon.json").write_text(json.dumps(config, indent=2))


def _spawn_dockerd(layout: LabLayout, name: str, netns: str) -> int:
    """Start a host's engine from its daemon.json (a stale pidfile would make it refuse)."""
    (layout.host_run(name) / "dockerd.pid").unlink(missing_ok=True)
    return start_daemon(
        ["dockerd", "--config-file", str(layout.host_dir(name) / "daemon.json")],
        layout.host_dir(name) / "dockerd.log",
        netns=netns, uts=layout.host_run(name) / "uts", env=_engine_env(layout, name),
    )  # fmt: skip


def _start_sshd(
    layout: LabLayout, profile: HostProfile, address: str, netns: str, uts: Path
) -> int:
    name = profile.name
    hdir = layout.host_dir(name)
    env = {
        "MLFLEET_ROOT": str(layout.root(name)),
        # The lab's device stand-ins live in the hardware root; the engine must be told so.
        "MLFLEET_DEVICE_ROOT": str(layout.root(name)),
        "MLFLEET_AGENT_DIR": str(layout.agent_dir(name)),
        "MLFLEET_CRON_DIR": str(layout.cron_dir(name)),
        # Bash runs ~/.bashrc for every command that arrives over SSH unless SHLVL says it
        # is not a top-level shell. The lab hosts share this machine's /root, whose .bashrc
        # may set up a developer's tools (pyenv's init takes a global lock: 100 sessions at
        # once queue on it for a minute); a real host's root has a stock one.
        "SHLVL": "1",
    }
    if profile.engine:
        env["DOCKER_HOST"] = layout.docker_host(name)
    config = hdir / "sshd_config"
    config.write_text(
        f"ListenAddress {address}:22\n"
        f"HostKey {hdir / 'ssh_host_ed25519_key'}\n"
        f"PidFile {layout.host_run(name) / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {layout.ssh_dir / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "AllowTcpForwarding yes\n"
        "MaxStartups 200:30:400\n"
        "MaxSessions 100\n"
        "LogLevel ERROR\n"
        "Subsystem sftp internal-sftp\n"
        "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()) + "\n"
    )
    return start_daemon(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], hdir / "sshd.log", netns=netns, uts=uts
    )


def _start_crond(layout: LabLayout, name: str, netns: str, uts: Path) -> int:
    hdir = layout.host_dir(name)
    return start_daemon(
        ["busybox", "crond", "-f", "-c", str(layout.cron_dir(name)), "-L", str(hdir / "cron.log")],
        hdir / "crond.out", netns=netns, uts=uts,
    )  # fmt: skip


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _engine_answers(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b" 200 " in s.recv(64)
    except OSError:
        return False


# --- down --------------------------------------------------------------------------------


def _leftovers(layout: LabLayout) -> bool:
    return (
        layout.base.exists()
        or layout.run.exists()
        or network.interface_exists(layout.bridge)
        or bool(network.interfaces_with_prefix(layout.veth_prefix))
        or any(ns.startswith(layout.netns_prefix) for ns in network.list_netns())
    )


def down(layout: LabLayout, progress: Optional[Progress] = None) -> None:
    """Remove everything the lab made: processes (by pid, then any straggler naming the
    lab's paths), containers' cgroups, namespaces, the bridge, mounts and files."""
    with _exclusive(layout, progress):
        if progress:
            progress(f"taking lab {layout.name!r} down")
        _down(layout)


def _down(layout: LabLayout) -> None:
    state = read_state(layout) or {}
    # Engines first and gracefully, so they stop their containers and unmount layers.
    hosts = state.get("hosts", [])
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda h: stop_pid(h["pids"].get("dockerd"), expect="dockerd"), hosts))
    # Every host's sshd and crond at once: one grace period for the whole lab, not one
    # per daemon (a lab of 1,000 hosts would otherwise wait minutes).
    daemons = [(h["pids"].get(d), d) for h in hosts for d in ("sshd", "crond")]
    terminate_all([p for p, d in daemons if p and alive(p) and d in cmdline(p)], grace=5)
    stop_pid(state.get("registry", {}).get("pid"), expect="docker-registry", timeout=5)
    lab_registry.remove_trust(state.get("registry", {}))
    kill_all(pids_mentioning([str(layout.base) + "/", str(layout.run) + "/"]))
    kill_cgroups(layout.cgroup_prefix)
    # Deleting our end of each veth pair takes the host's end with it, even when something
    # still pins the host's namespace after it was deleted.
    network.delete_all(
        links=network.interfaces_with_prefix(layout.veth_prefix),
        netns=[ns for ns in network.list_netns() if ns.startswith(layout.netns_prefix)],
    )
    network.delete_interface(layout.bridge)
    neighbours.release(layout.name, layout.run_root / "neighbours.json")
    for path in (layout.run, layout.base):
        network.unmount_all(path)
    for path in (layout.run, layout.base):
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            if path.exists():
                raise LabError(
                    f"could not remove {path}", hint="see `findmnt -R " + str(path) + "`"
                )


# --- operations on a running lab ---------------------------------------------------------


def require_state(layout: LabLayout) -> Dict[str, Any]:
    state = read_state(layout)
    if not state:
        raise LabError(f"lab {layout.name!r} is not up", hint="run `mlfleet lab up`")
    return state


def find_host(state: Dict[str, Any], name: str) -> Dict[str, Any]:
    for host in state["hosts"]:
        if host["name"] == name:
            return host
    names = ", ".join(h["name"] for h in state["hosts"])
    raise LabError(f"no lab host {name!r}", hint=f"hosts: {names}")


def engine(layout: LabLayout, name: str, action: str) -> None:
    """What a host's init system would do to its Docker engine: stop, start, restart."""
    with _exclusive(layout):
        _engine(layout, name, action)


def _engine(layout: LabLayout, name: str, action: str) -> None:
    state = require_state(layout)
    host = find_host(state, name)
    if not host["profile"].get("engine", True):
        raise LabError(f"lab host {name!r} has no Docker engine (engine: false)")
    if action in ("stop", "restart"):
        stop_pid(host["pids"].get("dockerd"), expect="dockerd")
        host["pids"]["dockerd"] = None
    if action in ("start", "restart") and not alive(host["pids"].get("dockerd")):
        host["pids"]["dockerd"] = _spawn_dockerd(layout, name, host["netns"])
        sock = layout.docker_socket(name)
        wait_until(lambda: _engine_answers(sock), 60, f"docker engine on {name}")
    _write_state(layout, state)


def link(layout: LabLayout, name: str, up_: bool) -> None:
    """Cut or restore a host's network link."""
    host = find_host(require_state(layout), name)
    network.set_link(host["veth"], up_)


def login(layout: LabLayout, name: str, logged_in: bool) -> Path:
    """Place (or remove) the lab registry's login in a host's own Docker config, the file an
    operator's `docker login` on that host writes: root's ~/.docker/config.json under the
    host's root. Returns its path."""
    state = require_state(layout)
    find_host(state, name)
    path = layout.root(name) / "root/.docker/config.json"
    if not logged_in:
        path.unlink(missing_ok=True)
        return path
    source = state["registry"].get("docker_config")
    if not source:
        raise LabError(f"lab {layout.name!r} has an open registry: there is no login to place")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    registry_tls.write_private(path, Path(source).read_text())
    return path


def gpu(layout: LabLayout, name: str, loaded: bool) -> None:
    """Unload (lost) or load again (back) a host's GPU drivers: what a kernel update without
    the module rebuilt does to a host, and its repair. The user space stays installed."""
    with _exclusive(layout):
        _gpu(layout, name, loaded)


def _gpu(layout: LabLayout, name: str, loaded: bool) -> None:
    state = require_state(layout)
    host = find_host(state, name)
    profile = HostProfile.from_dict(host["profile"])
    if not driver_vendors(profile):
        why = (
            "is a Jetson: its GPU driver is part of its L4T kernel, `lab gpu` leaves it be"
            if profile.jetson
            else "has no NVIDIA driver and no AMD GPU: no driver to take away"
        )
        raise LabError(
            f"lab host {name!r} {why}",
            hint=f"hosts `lab gpu` applies to: {', '.join(_gpu_hosts(state)) or 'none'}",
        )
    root = layout.root(name)
    if not loaded:
        remove_root(root, unloaded_entries(profile))
    write_root(root, render_root(profile, driver_loaded=loaded))
    host["gpu_lost"] = not loaded
    _write_state(layout, state)


def _gpu_hosts(state: Dict[str, Any]) -> List[str]:
    return [h["name"] for h in state["hosts"] if _gpu_state(h) is not None]


def _gpu_state(host: Dict[str, Any]) -> Optional[str]:
    """The host's GPU driver as `lab gpu` left it ("ok" or "lost"); None where it has none."""
    if not driver_vendors(HostProfile.from_dict(host["profile"])):
        return None
    return "lost" if host.get("gpu_lost") else "ok"


def reboot(layout: LabLayout, name: str) -> float:
    """Reboot a host: its engine stopped as systemd stops it (the containers with it), every
    process left in the host killed, then what it runs at boot started again; the engine
    brings its containers back by their restart policies. Returns the seconds it took."""
    with _exclusive(layout):
        return _reboot(layout, name)


def _reboot(layout: LabLayout, name: str) -> float:
    started = time.monotonic()
    state = require_state(layout)
    host = find_host(state, name)
    profile = HostProfile.from_dict(host["profile"])
    stop_pid(host["pids"].get("dockerd"), expect="dockerd")
    # Then the rest, as the end of a shutdown: sshd and its sessions, crond and whatever it
    # started (a long-running agent daemon). Twice: what started while the first ones went.
    for _ in range(2):
        terminate_all(network.netns_pids(host["netns"]))
    host["pids"] = {}
    _write_state(layout, state)  # no pids of processes that are gone, should the boot fail
    host["pids"] = _boot(layout, profile, host["address"], host["netns"])
    _write_state(layout, state)
    return time.monotonic() - started


def status(layout: LabLayout) -> Dict[str, Any]:
    """What runs, as `lab status --json` prints it."""
    state = require_state(layout)
    registry_address = state["registry"]["address"]
    hosts = []
    for host in state["hosts"]:
        name = host["name"]
        engine_on = host["profile"].get("engine", True)
        link_up = (Path(f"/sys/class/net/{host['veth']}/operstate").read_text().strip()
                   if network.interface_exists(host["veth"]) else "missing")  # fmt: skip
        hosts.append(
            {
                "name": name,
                "address": host["address"],
                "ssh_user": SSH_USER,
                "ssh_port": 22,
                "ssh_key": state["ssh_key"],
                "known_hosts": state["known_hosts"],
                "docker_host": layout.docker_host(name) if engine_on else None,
                "root": str(layout.root(name)),
                "agent_dir": str(layout.agent_dir(name)),
                "cron_dir": str(layout.cron_dir(name)),
                "data_dir": str(layout.data_dir(name)),
                "profile": host["profile"],
                "running": host_health(layout, host),
                "link": link_up,
                "gpu": _gpu_state(host),
            }
        )
    return {
        "name": state["name"],
        "subnet": state["subnet"],
        "profiles": state["profiles"],
        "created": state["created"],
        "registry": {
            "address": registry_address,
            "https": bool(state["registry"].get("https")),
            "ca": state["registry"].get("ca"),
            "docker_config": state["registry"].get("docker_config"),
            "running": alive(state["registry"].get("pid")),
            "images": state["registry"].get("images", []),
        },
        "hosts": hosts,
    }


def ssh_argv(layout: LabLayout, name: str, command: List[str]) -> List[str]:
    """An `ssh` command line for a lab host, with strict host-key checking."""
    state = require_state(layout)
    host = find_host(state, name)
    argv = [
        "ssh", "-i", state["ssh_key"],
        "-o", f"UserKnownHostsFile={state['known_hosts']}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        f"{SSH_USER}@{host['address']}",
    ]  # fmt: skip
    if command:
        argv += ["--", *command]
    return argv


def run_on(
    layout: LabLayout, name: str, command: List[str], timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run a command on a lab host over SSH (used by the demo and tests)."""
    return subprocess.run(
        ssh_argv(layout, name, command), capture_output=True, text=True, timeout=timeout
    )
