"""SSH to fleet hosts (paramiko): host keys verified against known_hosts, key files and
ssh-agent, jump hosts, sudo, timeouts. Commands are argv lists, quoted here and nowhere
else, so no shell line is ever built from unquoted input."""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import shlex
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

import paramiko

from mlfleet.controller.errors import ExitCode, MlfleetError
from mlfleet.controller.hosts import Host


class HostUnreachable(MlfleetError):
    """The host could not be reached or refused us (network, auth, host key)."""

    exit_code = ExitCode.UNREACHABLE


class HostKeyChanged(HostUnreachable):
    """The host presented a key other than the one known_hosts has for it."""


@dataclass(frozen=True)
class CommandResult:
    code: int
    stdout: str
    stderr: str


class Stream(Protocol):
    """One connection through a tunnel (a paramiko Channel is one)."""

    def recv(self, nbytes: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...

    def close(self) -> None: ...


StreamHandler = Callable[[Stream], None]


class Transport(Protocol):
    """How the controller reaches one host. `Connection` (SSH, paramiko) is the real one;
    the unit tests' fake agent is another."""

    host: Host

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        timeout: float = 600.0,
        on_stderr_line: Optional[Callable[[str], None]] = None,
    ) -> CommandResult:
        """Run argv on the host; raises HostUnreachable when it cannot, or when the command
        sends nothing for `timeout` seconds (a long pull that reports progress goes on)."""
        ...

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write a file on the host atomically."""
        ...

    def forward_remote(self, handler: StreamHandler) -> int:
        """Listen on 127.0.0.1:PORT on the host; each connection made there is handed to
        `handler` (in a thread of its own). Returns PORT."""
        ...

    def cancel_forward(self, port: int) -> None:
        """Stop listening on the host's PORT (a dropped connection is fine)."""
        ...

    def close(self) -> None: ...


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Opt-in trust on first use: record an unknown host's key (never a changed one)."""

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _known_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class Connection:
    """One SSH connection to a host, reused across the phases of a deployment."""

    def __init__(
        self, host: Host, *, connect_timeout: float = 10.0, accept_new_host_keys: bool = False
    ):
        self.host = host
        self.connect_timeout = connect_timeout
        self.accept_new = accept_new_host_keys
        self._client: Optional[paramiko.SSHClient] = None
        self._jump: Optional[paramiko.SSHClient] = None
        self._lock = threading.Lock()

    # --- connecting --------------------------------------------------------------------

    def _client_for(
        self, address: str, port: int, user: Optional[str], sock: Optional[object] = None
    ) -> paramiko.SSHClient:
        known_hosts = os.path.expanduser(self.host.known_hosts)
        client = paramiko.SSHClient()
        if os.path.exists(known_hosts):
            client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(
            _AcceptNew(known_hosts) if self.accept_new else paramiko.RejectPolicy()
        )
        key_file = os.path.expanduser(self.host.ssh_key) if self.host.ssh_key else None
        try:
            client.connect(
                address, port=port, username=user, key_filename=key_file, timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
                allow_agent=True, look_for_keys=key_file is None, sock=sock,  # type: ignore[arg-type]
            )  # fmt: skip
        except paramiko.BadHostKeyException as exc:
            raise HostKeyChanged(
                f"host key changed: known_hosts has {fingerprint(exc.expected_key)}, "
                f"the host presented {fingerprint(exc.key)}",
                where=f"{self.host.name} ({address})",
                hint=f"if the host was reinstalled, verify and remove its line from {known_hosts}",
            ) from None
        except paramiko.SSHException as exc:
            text = str(exc)
            if "not found in known_hosts" in text:
                raise HostUnreachable(
                    f"host key of {_known_name(address, port)} is not in {known_hosts}",
                    where=self.host.name,
                    hint="verify the host's key and add it, or pass --accept-new-host-keys",
                ) from None
            raise HostUnreachable(f"SSH failed: {text}", where=self.host.name) from None
        except (OSError, socket.timeout) as exc:
            raise HostUnreachable(
                f"cannot reach {address}:{port}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}",
                where=self.host.name,
            ) from None
        return client

    def connect(self) -> Connection:
        with self._lock:
            live = self._client.get_transport() if self._client is not None else None
            if live is not None and live.is_active():
                return self
            sock = None
            jump = self.host.jump_host
            if jump is not None:
                self._jump = self._client_for(jump.address, jump.port, jump.user)
                transport = self._jump.get_transport()
                assert transport is not None
                sock = transport.open_channel(
                    "direct-tcpip", (self.host.address, self.host.port), ("127.0.0.1", 0)
                )
            self._client = self._client_for(self.host.address, self.host.port, self.host.user, sock)
            transport = self._client.get_transport()
            if transport is not None:
                transport.set_keepalive(15)
        return self

    def transport_or_none(self) -> Optional[paramiko.Transport]:
        return self._client.get_transport() if self._client is not None else None

    def transport(self) -> paramiko.Transport:
        """The live SSH transport (for tunnels)."""
        transport = self.transport_or_none()
        if transport is None or not transport.is_active():
            raise HostUnreachable("SSH connection dropped", where=self.host.name)
        return transport

    def close(self) -> None:
        for client in (self._client, self._jump):
            if client is not None:
                client.close()
        self._client = self._jump = None

    # --- tunnels -------------------------------------------------------------------------

    def forward_remote(self, handler: StreamHandler) -> int:
        self.connect()
        transport = self.transport()

        def incoming(
            channel: paramiko.Channel, origin: Tuple[str, int], server: Tuple[str, int]
        ) -> None:
            threading.Thread(target=handler, args=(channel,), daemon=True).start()

        try:
            return transport.request_port_forward("127.0.0.1", 0, handler=incoming)
        except paramiko.SSHException as exc:
            raise HostUnreachable(
                f"the host refused a reverse tunnel: {exc}",
                where=self.host.name,
                hint="allow it in sshd_config: AllowTcpForwarding yes (or remote)",
            ) from None

    def cancel_forward(self, port: int) -> None:
        transport = self.transport_or_none()
        if transport is not None and transport.is_active():
            try:
                transport.cancel_port_forward("127.0.0.1", port)
            except (paramiko.SSHException, EOFError, OSError):
                pass

    # --- running -------------------------------------------------------------------------

    def command_line(self, argv: Sequence[str]) -> str:
        line = " ".join(shlex.quote(a) for a in argv)
        if self.host.become and self.host.user != "root":
            line = "sudo -n -- " + line
        return line

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: Optional[bytes] = None,
        timeout: float = 600.0,
        on_stderr_line: Optional[Callable[[str], None]] = None,
    ) -> CommandResult:
        """Run argv on the host (quoted, with sudo when configured); stderr lines are passed
        to `on_stderr_line` as they arrive (the agent's progress events). `timeout` counts
        from the last byte the command sent: a multi-GB pull over a slow link that reports
        its progress is not cut off, a silent, hung command is."""
        self.connect()
        assert self._client is not None
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable("SSH connection dropped", where=self.host.name)
        chan = transport.open_session(timeout=self.connect_timeout)
        chan.settimeout(1.0)
        chan.exec_command(self.command_line(argv))
        if stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err, pending = bytearray(), bytearray(), b""
        deadline = time.monotonic() + timeout
        while True:
            progressed = False
            while chan.recv_ready():
                out += chan.recv(65536)
                progressed = True
            while chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                err += data
                pending += data
                progressed = True
                if on_stderr_line is not None:
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        on_stderr_line(line.decode("utf-8", errors="replace"))
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if progressed:
                deadline = time.monotonic() + timeout
            elif time.monotonic() > deadline:
                chan.close()
                raise HostUnreachable(
                    f"command sent nothing for {timeout:.0f}s: {argv[0]} ...",
                    where=self.host.name,
                )
            if not progressed:
                time.sleep(0.02)
        code = chan.recv_exit_status()
        chan.close()
        return CommandResult(
            code, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace")
        )

    def put(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write a file on the host atomically (temporary name, then rename)."""
        self.connect()
        assert self._client is not None
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        if self.host.become and self.host.user != "root":
            staged = f"/tmp/mlfleet-{uuid.uuid4().hex}"
            with self._client.open_sftp() as sftp, sftp.open(staged, "wb") as fh:
                fh.write(data)
            for argv in (
                ["install", "-D", "-m", f"{mode:o}", staged, tmp],
                ["mv", "-f", tmp, path],
                ["rm", "-f", staged],
            ):
                result = self.run(argv, timeout=60)
                if result.code != 0:
                    raise HostUnreachable(
                        f"could not write {path}: {result.stderr.strip()}", where=self.host.name
                    )
            return
        with self._client.open_sftp() as sftp:
            _sftp_makedirs(sftp, posixpath.dirname(path))
            with sftp.open(tmp, "wb") as fh:
                fh.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, path)


def _sftp_makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    parts: List[str] = []
    while path not in ("", "/"):
        try:
            sftp.stat(path)
            break
        except FileNotFoundError:
            parts.append(path)
            path = posixpath.dirname(path)
    for p in reversed(parts):
        sftp.mkdir(p)
