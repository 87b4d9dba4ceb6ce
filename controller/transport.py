"""SSH to fleet hosts (paramiko): host keys verified against known_hosts (a key marked
`@revoked` there is refused), key files and ssh-agent, jump hosts, sudo, timeouts, a few
retries of a connect that failed for a passing reason (never of a refused key or login).
Commands are argv lists, quoted here and nowhere else, so no shell line is ever built from
unquoted input."""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import logging
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
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
from paramiko.ssh_exception import NoValidConnectionsError

from mlfleet.controller.errors import ConfigError, ExitCode, MlfleetError
from mlfleet.controller.hosts import Host

log = logging.getLogger(__name__)

# Waits before the second and third connect attempts (transient failures only).
RETRY_DELAYS: Tuple[float, ...] = (1.0, 2.0)


class HostUnreachable(MlfleetError):
    """The host could not be reached or refused us (network, auth, host key)."""

    exit_code = ExitCode.UNREACHABLE


class HostKeyChanged(HostUnreachable):
    """The host presented a key other than the one known_hosts has for it."""


class HostKeyRevoked(HostUnreachable):
    """The host presented a key that known_hosts marks `@revoked`."""


class HostKeyUnknown(HostUnreachable):
    """known_hosts has no key for the host (and new keys are not accepted)."""


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


@dataclass(frozen=True)
class RevokedKey:
    """A key on a `@revoked` line of a known_hosts file."""

    key_type: str
    blob: bytes  # the key's wire form (its base64 field decoded)
    where: str  # file:line


@dataclass
class KnownHosts:
    """A known_hosts file as mlfleet reads it: its host keys (`(names, key)` per line, a
    revoked key left out wherever it is listed) and its `@revoked` keys. A revoked key is
    refused for every host, whatever names its line lists ("must not ever be accepted",
    sshd(8)); `@cert-authority` lines are skipped (paramiko does not check certificates)."""

    path: str
    entries: List[Tuple[List[str], paramiko.PKey]]
    revoked: List[RevokedKey]

    @classmethod
    def parse(cls, text: str, path: str) -> KnownHosts:
        """Read the file's text (pure). Lines paramiko cannot read are skipped, as it does."""
        revoked: List[RevokedKey] = []
        plain: List[Tuple[int, str]] = []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if not line.startswith("@"):
                plain.append((lineno, line))
                continue
            fields = line.split()
            if fields[0] == "@revoked" and len(fields) >= 4:
                try:
                    blob = base64.b64decode(fields[3], validate=True)
                except (binascii.Error, ValueError):
                    continue
                revoked.append(RevokedKey(fields[2], blob, f"{path}:{lineno}"))
        blobs = {r.blob for r in revoked}
        entries: List[Tuple[List[str], paramiko.PKey]] = []
        for lineno, line in plain:
            try:
                entry = HostKeyEntry.from_line(line, lineno)
            except (paramiko.SSHException, InvalidHostKey, ValueError):
                continue
            if entry is not None and entry.key is not None and entry.key.asbytes() not in blobs:
                entries.append((list(entry.hostnames), entry.key))
        return cls(path, entries, revoked)

    @classmethod
    def load(cls, path: str, host: str) -> KnownHosts:
        """The file at `path` (none there: no keys); unreadable: a ConfigError."""
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise ConfigError(
                f"cannot read known_hosts {path}: {exc.strerror or exc}", where=host
            ) from None
        return cls.parse(text, path)

    def revocation(self, key: paramiko.PKey) -> Optional[RevokedKey]:
        """The `@revoked` line of `key`, if it has one."""
        blob = key.asbytes()
        return next((r for r in self.revoked if r.blob == blob), None)

    def fill(self, keys: paramiko.HostKeys) -> None:
        """Put the (unrevoked) host keys into a client's key store; the first key of a
        type for a name wins, as with paramiko's own loading."""
        seen = set()
        for names, key in self.entries:
            for name in names:
                if (name, key.get_name()) not in seen:
                    seen.add((name, key.get_name()))
                    keys.add(name, key.get_name(), key)


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """What to do with a key known_hosts does not list for the host: refuse a revoked key
    (always), then refuse any other, or (opt-in trust on first use) record it."""

    def __init__(self, known: KnownHosts, host: str, accept_new: bool):
        self.known = known
        self.host = host
        self.accept_new = accept_new

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        refuse_revoked(self.known, hostname, key, self.host)
        if not self.accept_new:
            raise HostKeyUnknown(
                f"host key of {hostname} ({fingerprint(key)}) is not in {self.known.path}",
                where=self.host,
                hint="verify the host's key and add it, or pass --accept-new-host-keys",
            )
        client.get_host_keys().add(hostname, key.get_name(), key)
        os.makedirs(os.path.dirname(self.known.path) or ".", exist_ok=True)
        with open(self.known.path, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def refuse_revoked(known: KnownHosts, hostname: str, key: paramiko.PKey, host: str) -> None:
    """HostKeyRevoked when `key` is on a `@revoked` line of known_hosts."""
    revoked = known.revocation(key)
    if revoked is not None:
        raise HostKeyRevoked(
            f"host key of {hostname} ({fingerprint(key)}) is marked @revoked in {revoked.where}",
            where=host,
            hint="the host must not be trusted with that key: give it new host keys, verify"
            " and add them",
        )


# errno values of a connection that failed on the way (worth another attempt, and an
# unreachable host rather than a failed one).
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EPIPE,
    }
)


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` says the connection to the host failed or dropped (SSH, socket, a name
    that does not resolve), rather than something the host or the controller did (pure)."""
    if isinstance(exc, HostUnreachable):
        return True
    if isinstance(exc, (paramiko.SSHException, EOFError, socket.timeout, ConnectionError)):
        return True
    if isinstance(exc, (socket.gaierror, NoValidConnectionsError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS


# Failures that come back at once and often go away in a second (sshd restarting, a
# MaxStartups drop, a reset on the way). A timeout or an unreachable network is not
# retried: the host already had the whole connect timeout, and three of them for each dead
# host of a fleet would triple a command's time for nothing.
_TRANSIENT_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE}
)


def is_transient(exc: BaseException) -> bool:
    """Whether a connect that failed with `exc` is worth another attempt (pure): refused,
    reset or closed before or during the SSH banner. Never a timeout or an unreachable
    network, a refused login, a host key (unknown, changed, revoked) or a name that does
    not resolve."""
    if isinstance(exc, (MlfleetError, paramiko.AuthenticationException, paramiko.BadHostKeyException)):  # fmt: skip
        return False
    if isinstance(exc, NoValidConnectionsError):
        return all(is_transient(e) for e in exc.errors.values())
    if isinstance(exc, paramiko.ChannelException):  # through a jump host: 2 connect failed
        return exc.code in (2, 4)
    if isinstance(exc, paramiko.SSHException):
        return str(exc).startswith("Error reading SSH protocol banner")
    if isinstance(exc, (socket.gaierror, socket.timeout)):
        return False
    if isinstance(exc, (EOFError, ConnectionResetError, ConnectionRefusedError, ConnectionAbortedError, BrokenPipeError)):  # fmt: skip
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def _why_not(exc: BaseException) -> str:
    """A failed connect in words: `Connection refused`, `timed out`."""
    if isinstance(exc, NoValidConnectionsError) and exc.errors:
        return _why_not(next(iter(exc.errors.values())))
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _login_key(path: Optional[str]) -> Tuple[Optional[paramiko.PKey], Optional[str]]:
    """(key, None): the key file read once, so that a refused login is reported as one
    (given the file, paramiko tries every key type on it and reports the last type's parse
    error instead); (None, path): a key it cannot read so (a passphrase) left to paramiko."""
    if path is None:
        return None, None
    try:
        return paramiko.PKey.from_path(path), None
    except Exception:
        return None, path


def _known_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class Connection:
    """One SSH connection to a host, reused across the phases of a deployment."""

    def __init__(
        self,
        host: Host,
        *,
        connect_timeout: float = 10.0,
        accept_new_host_keys: bool = False,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.host = host
        self.connect_timeout = connect_timeout
        self.accept_new = accept_new_host_keys
        self.retry_delays = tuple(retry_delays)
        self._sleep = sleep
        self._client: Optional[paramiko.SSHClient] = None
        self._jump: Optional[paramiko.SSHClient] = None
        self._lock = threading.Lock()

    # --- connecting --------------------------------------------------------------------

    def _client_for(
        self,
        address: str,
        port: int,
        user: Optional[str],
        open_sock: Optional[Callable[[], object]] = None,
    ) -> paramiko.SSHClient:
        """A connected, authenticated client; a transient failure is tried again after each
        of `retry_delays` (`open_sock`: a new channel through the jump host each time)."""
        known = KnownHosts.load(os.path.expanduser(self.host.known_hosts), self.host.name)
        key_file = self.host.ssh_key
        if key_file is not None and not os.path.isfile(key_file):
            raise ConfigError(
                f"host {self.host.name!r}: the SSH key file {key_file} does not exist",
                hint="set ansible_ssh_private_key_file to a private key file, or leave it unset"
                " for the ssh-agent and ~/.ssh keys",
            )
        login = _login_key(key_file)
        attempts = len(self.retry_delays) + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._connect_once(known, address, port, user, login, open_sock)
            except MlfleetError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise self._refusal(exc, known, address, port) from None
                if attempt == attempts:
                    tried = f" after {attempts} attempts" if attempts > 1 else ""
                    raise HostUnreachable(
                        f"cannot reach {address}:{port}{tried}: {_why_not(exc)}",
                        where=self.host.name,
                    ) from None
                delay = self.retry_delays[attempt - 1]
                log.debug("%s: connect to %s:%s failed (%s); again in %.0fs", self.host.name,
                          address, port, _why_not(exc), delay)  # fmt: skip
                self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _connect_once(self, known: KnownHosts, address: str, port: int, user: Optional[str],
                      login: Tuple[Optional[paramiko.PKey], Optional[str]],
                      open_sock: Optional[Callable[[], object]]) -> paramiko.SSHClient:  # fmt: skip
        client = paramiko.SSHClient()
        known.fill(client.get_host_keys())
        client.set_missing_host_key_policy(_HostKeyPolicy(known, self.host.name, self.accept_new))
        pkey, key_file = login
        try:
            sock = open_sock() if open_sock is not None else None
            client.connect(
                address, port=port, username=user, pkey=pkey, key_filename=key_file,
                timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout, allow_agent=True,
                look_for_keys=self.host.ssh_key is None, sock=sock,  # type: ignore[arg-type]
            )  # fmt: skip
        except BaseException:
            client.close()  # its transport thread too
            raise
        return client

    def _refusal(
        self, exc: BaseException, known: KnownHosts, address: str, port: int
    ) -> MlfleetError:
        """A connect that failed for good, in one line."""
        if isinstance(exc, paramiko.BadHostKeyException):
            refuse_revoked(known, _known_name(address, port), exc.key, self.host.name)
            return HostKeyChanged(
                f"host key changed: known_hosts has {fingerprint(exc.expected_key)}, "
                f"the host presented {fingerprint(exc.key)}",
                where=f"{self.host.name} ({address})",
                hint=f"if the host was reinstalled, verify and remove its line from {known.path}",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return HostUnreachable(
                f"SSH login to {address}:{port} refused: {exc}",
                where=self.host.name,
                hint="check ansible_user and ansible_ssh_private_key_file (or the ssh-agent)",
            )
        if isinstance(exc, paramiko.SSHException):
            return HostUnreachable(f"SSH failed: {exc}", where=self.host.name)
        if is_connection_error(exc):
            return HostUnreachable(
                f"cannot reach {address}:{port}: {_why_not(exc)}", where=self.host.name
            )
        return HostUnreachable(
            f"SSH to {address}:{port} failed: {type(exc).__name__}: {exc}", where=self.host.name
        )

    def connect(self) -> Connection:
        with self._lock:
            live = self._client.get_transport() if self._client is not None else None
            if live is not None and live.is_active():
                return self
            self.close()  # what a dropped connection left (its jump host's too)
            open_sock: Optional[Callable[[], object]] = None
            jump = self.host.jump_host
            if jump is not None:
                self._jump = self._client_for(jump.address, jump.port, jump.user)
                through = self._jump.get_transport()
                assert through is not None
                target = (self.host.address, self.host.port)

                def open_sock() -> object:
                    return through.open_channel("direct-tcpip", target, ("127.0.0.1", 0))

            self._client = self._client_for(
                self.host.address, self.host.port, self.host.user, open_sock
            )
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
