"""SSH to fleet hosts (paramiko): host keys verified against known_hosts (a key marked
`@revoked` there is refused; each file parsed once per run, `KnownHostsCache`), key files and ssh-agent, jump hosts, sudo, timeouts, a few
retries of a connect that failed for a passing reason (never of a refused key or login).
Commands are argv lists, quoted here and nowhere else, so no shell line is ever built from
unquoted input."""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import hmac
import logging
import os
import posixpath
import shlex
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

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


# HMAC's pads (RFC 2104), each byte of a key XORed with 0x36 and with 0x5c.
_HMAC_IPAD = bytes(b ^ 0x36 for b in range(256))
_HMAC_OPAD = bytes(b ^ 0x5C for b in range(256))


@dataclass(frozen=True)
class _HashedName:
    """A `|1|salt|hash` name of a known_hosts line (OpenSSH's HashKnownHosts): a name
    matches when its HMAC-SHA1 under the salt is the hash, as paramiko's lookup tests it.
    The salt's inner and outer SHA-1 states are computed once (RFC 2104: HMAC(K, m) =
    H(K^opad, H(K^ipad, m))): a file's every hashed name is tried for every connection, and
    a copy of each state costs less than half of a fresh `hmac.digest`."""

    text: str  # the name as written in the file
    inner: hashlib._Hash  # SHA-1 having read salt^ipad
    outer: hashlib._Hash  # SHA-1 having read salt^opad
    digest: bytes

    @classmethod
    def read(cls, text: str) -> Optional[_HashedName]:
        """Salt and hash of a hashed name; None when no name can match it in paramiko: a
        salt that is not 20 bytes (its lookup fails with an AssertionError), or base64
        other than the one paramiko writes (it compares the text it would write)."""
        fields = text.split("|")
        if len(fields) != 4:
            return None
        try:
            salt, digest = (base64.b64decode(f.encode(), validate=True) for f in fields[2:])
        except (binascii.Error, ValueError):
            return None
        if len(salt) != hashlib.sha1().digest_size:
            return None
        if f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}" != text:
            return None
        block = salt.ljust(hashlib.sha1().block_size, b"\0")
        inner, outer = hashlib.sha1(block.translate(_HMAC_IPAD)), hashlib.sha1(block.translate(_HMAC_OPAD))  # fmt: skip
        return cls(text, inner, outer, digest)

    def matches(self, name: bytes) -> bool:
        inner, outer = self.inner.copy(), self.outer.copy()
        inner.update(name)
        outer.update(inner.digest())
        return hmac.compare_digest(outer.digest(), self.digest)


@dataclass
class KnownHosts:
    """A known_hosts file as mlfleet reads it: its host keys (`(names, key)` per line, a
    revoked key left out wherever it is listed) and its `@revoked` keys. A revoked key is
    refused for every host, whatever names its line lists ("must not ever be accepted",
    sshd(8)); `@cert-authority` lines are skipped (paramiko does not check certificates).

    Indexed once for lookups by name (`keys_for`): a plain name in a dict, a hashed one by
    its HMAC, so a connection costs one dict lookup and one HMAC per hashed name, not a
    parse of the file."""

    path: str
    entries: List[Tuple[List[str], paramiko.PKey]]
    revoked: List[RevokedKey]
    # (name, key) in the order paramiko would hold them had it loaded the file, the first
    # key of a type for a name winning (the order decides which key type paramiko asks
    # the host for, and which key of a type it compares).
    _by_name: Dict[str, List[Tuple[int, paramiko.PKey]]] = field(init=False, repr=False, compare=False)  # fmt: skip
    _hashed: List[Tuple[int, _HashedName, paramiko.PKey]] = field(init=False, repr=False, compare=False)  # fmt: skip
    _revoked_by_blob: Dict[bytes, RevokedKey] = field(init=False, repr=False, compare=False)  # fmt: skip
    _pairs: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name, self._hashed, self._revoked_by_blob, self._pairs = {}, [], {}, 0
        for r in self.revoked:
            self._revoked_by_blob.setdefault(r.blob, r)
        for names, key in self.entries:
            self._index(names, key)

    def _index(self, names: Sequence[str], key: paramiko.PKey) -> None:
        for name in names:
            held = self._by_name.get(name, [])
            if any(k.get_name() == key.get_name() for _, k in held):
                continue  # the first key of a type for a name wins, as in paramiko
            order, self._pairs = self._pairs, self._pairs + 1
            # A new list, not an append: a lookup in another thread sees the old or the new.
            self._by_name[name] = [*held, (order, key)]
            hashed = _HashedName.read(name) if name.startswith("|1|") else None
            if hashed is not None:
                self._hashed.append((order, hashed, key))

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

    def revocation(self, key: paramiko.PKey) -> Optional[RevokedKey]:
        """The `@revoked` line of `key`, if it has one."""
        return self._revoked_by_blob.get(key.asbytes())

    def keys_for(self, name: str) -> List[Tuple[str, paramiko.PKey]]:
        """The `(name as listed, key)` pairs paramiko's `HostKeys.lookup(name)` would find
        had it loaded the whole file, in its order: the same name, or a hashed name whose
        HMAC matches (`name` is `host` on port 22, else `[host]:port`, as paramiko's
        `SSHClient.connect` looks it up)."""
        found = [(order, name, key) for order, key in self._by_name.get(name, ())]
        if not name.startswith("|1|"):  # paramiko tests no hash of a hashed name
            raw = name.encode()
            found += [(o, h.text, k) for o, h, k in list(self._hashed) if h.matches(raw)]
        return [(listed, key) for _, listed, key in sorted(found, key=lambda f: f[0])]

    def fill(self, keys: paramiko.HostKeys, name: str) -> None:
        """Put into a client's key store the keys it will look up for `name` (and no
        others: paramiko's own store is a list it scans per lookup and per add)."""
        for listed, key in self.keys_for(name):
            keys.add(listed, key.get_name(), key)

    def add(self, name: str, key: paramiko.PKey) -> None:
        """Know `key` for `name` from now on (a key just appended to the file)."""
        self.entries.append(([name], key))
        self._index([name], key)


@dataclass(frozen=True)
class _FileVersion:
    """What tells one content of a file from another without reading it (a file replaced
    by a rename has another inode; one written in place another mtime or size)."""

    mtime_ns: int
    size: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> _FileVersion:
        return cls(st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _read_known_hosts(path: str, host: str) -> Tuple[KnownHosts, Optional[_FileVersion]]:
    """The file parsed, and the version of it read (None: there is no file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            version: Optional[_FileVersion] = _FileVersion.of(os.fstat(fh.fileno()))
            text = fh.read()
    except FileNotFoundError:
        version, text = None, ""
    except OSError as exc:
        raise ConfigError(
            f"cannot read known_hosts {path}: {exc.strerror or exc}", where=host
        ) from None
    return KnownHosts.parse(text, path), version


class _CachedFile:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # one reader or writer of the file at a time
        self.known: Optional[KnownHosts] = None
        self.version: Optional[_FileVersion] = None


class KnownHostsCache:
    """The known_hosts files of this process, each parsed once and again only when it
    changed on disk (its mtime, size or inode), shared by every connection: at a thousand
    hosts a run reads the file once, not once per host. Thread-safe: the first connection
    to ask parses while the others wait for it. New keys (`--accept-new-host-keys`) are
    appended here, one writer at a time, and known at once to the following connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: Dict[str, _CachedFile] = {}

    def _file(self, path: str) -> Tuple[str, _CachedFile]:
        real = os.path.realpath(os.path.expanduser(path))
        with self._lock:
            return real, self._files.setdefault(real, _CachedFile())

    @staticmethod
    def _current(real: str, cached: _CachedFile, host: str) -> KnownHosts:
        """The file as it is now (the caller holds `cached.lock`): one stat, and a parse
        only when that found another version than the one parsed."""
        try:
            now: Optional[_FileVersion] = _FileVersion.of(os.stat(real))
        except FileNotFoundError:
            now = None
        except OSError as exc:
            raise ConfigError(
                f"cannot read known_hosts {real}: {exc.strerror or exc}", where=host
            ) from None
        if cached.known is None or now != cached.version:
            # Measured on the open file before reading it: a change made meanwhile leaves
            # a version unlike the one stored, read again next time, never a stale one.
            cached.known, cached.version = _read_known_hosts(real, host)
        return cached.known

    def get(self, path: str, host: str) -> KnownHosts:
        """The keys of the known_hosts file at `path` (`~` expanded, symlinks followed);
        none there: no keys; unreadable: a ConfigError naming `host`."""
        real, cached = self._file(path)
        with cached.lock:
            return self._current(real, cached, host)

    def accept(self, path: str, name: str, key: paramiko.PKey, host: str) -> None:
        """Record `key` for `name` (trust on first use): appended to the file as one whole
        line, unless the file, read again if it changed, has meanwhile got a key for `name`
        (another connection to the same host). A revoked key is refused, and so is a key
        other than the one recorded meanwhile (paramiko's BadHostKeyException)."""
        real, cached = self._file(path)
        with cached.lock:
            known = self._current(real, cached, host)
            refuse_revoked(known, name, key, host)
            listed = [k for _, k in known.keys_for(name)]
            if listed:
                expected = next((k for k in listed if k.get_name() == key.get_name()), listed[0])
                if expected.asbytes() == key.asbytes():
                    return
                raise paramiko.BadHostKeyException(name, key, expected)
            line = f"{name} {key.get_name()} {key.get_base64()}\n".encode()
            try:
                before, after, line = _append_line(real, line)
            except OSError as exc:
                raise ConfigError(
                    f"cannot record the host key of {name} ({fingerprint(key)}) in {real}:"
                    f" {exc.strerror or exc}",
                    where=host,
                    hint="make the known_hosts file writable, or add the key yourself",
                ) from None
            read_before = cached.version == _FileVersion.of(before) or (
                cached.version is None and before.st_size == 0  # no file, or an empty one
            )
            if (
                read_before
                and after.st_size == before.st_size + len(line)
                and after.st_ino == before.st_ino
            ):
                # Only our line was added: known without reading the file again.
                known.add(name, key)
                cached.version = _FileVersion.of(after)
            else:
                cached.known = None  # someone else wrote too: read it again next time


def _append_line(path: str, line: bytes) -> Tuple[os.stat_result, os.stat_result, bytes]:
    """Append `line` to the file (made if missing) with O_APPEND: the file before and
    after, and the bytes written (a newline first if the file's last line had none)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        before = os.fstat(fd)
        if before.st_size and os.pread(fd, 1, before.st_size - 1) != b"\n":
            line = b"\n" + line  # a last line without its newline stays whole
        written = 0
        while written < len(line):  # one write() of a line, unless the disk is full
            written += os.write(fd, line[written:])
        return before, os.fstat(fd), line
    finally:
        os.close(fd)


# The known_hosts files of this process (a run of the CLI), shared by its connections.
KNOWN_HOSTS = KnownHostsCache()


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """What to do with a key known_hosts does not list for the host: refuse a revoked key
    (always), then refuse any other, or (opt-in trust on first use) record it."""

    def __init__(self, known: KnownHosts, host: str, accept_new: bool, cache: KnownHostsCache):
        self.known = known
        self.host = host
        self.accept_new = accept_new
        self.cache = cache

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
        self.cache.accept(self.known.path, hostname, key, self.host)
        client.get_host_keys().add(hostname, key.get_name(), key)


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
    reset or closed before or during the SSH banner or the key exchange. Never a timeout or an unreachable
    network, a refused login, a host key (unknown, changed, revoked) or a name that does
    not resolve."""
    if isinstance(exc, (MlfleetError, paramiko.AuthenticationException, paramiko.BadHostKeyException)):  # fmt: skip
        return False
    if isinstance(exc, NoValidConnectionsError):
        return all(is_transient(e) for e in exc.errors.values())
    if isinstance(exc, paramiko.ChannelException):  # through a jump host: 2 connect failed
        return exc.code in (2, 4)
    if isinstance(exc, paramiko.SSHException):
        # Closed during the banner, or before the login could start ("No existing session":
        # the host dropped the connection in the key exchange, as an overloaded one does).
        return str(exc).startswith(("Error reading SSH protocol banner", "No existing session"))
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
        known_hosts_cache: Optional[KnownHostsCache] = None,
    ):
        self.host = host
        # The process's known_hosts files, unless a test brings its own.
        self.known_hosts_cache = known_hosts_cache or KNOWN_HOSTS
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
        known = self.known_hosts_cache.get(self.host.known_hosts, self.host.name)
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
        client = self.host_key_client(known, address, port)
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

    def host_key_client(self, known: KnownHosts, address: str, port: int) -> paramiko.SSHClient:
        """A new client that verifies the host key of address:port as known_hosts says: it
        holds the keys paramiko will look up for the host (`_known_name`, as paramiko's
        `SSHClient.connect` names it) and our policy for a key it does not find."""
        client = paramiko.SSHClient()
        known.fill(client.get_host_keys(), _known_name(address, port))
        policy = _HostKeyPolicy(known, self.host.name, self.accept_new, self.known_hosts_cache)
        client.set_missing_host_key_policy(policy)
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
