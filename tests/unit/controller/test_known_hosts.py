"""known_hosts at fleet size (controller/transport.py: KnownHosts, KnownHostsCache): a file
is parsed once per run whatever the number of hosts, again only when it changed; a client
is given only the keys paramiko will look up for its host, and its verdicts stay those of a
client given the whole file (right key accepted; changed, revoked and unknown keys
refused; hashed names and [host]:port found); new keys are appended once each, whole lines,
from many threads. Pure: no network. What paramiko does with the client once the host has
shown its key is `verdict` below, copied from paramiko 5.1's `SSHClient.connect`; the real
handshake is in test_transport.py."""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import paramiko
import pytest

from mlfleet.controller import transport
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.hosts import Host
from mlfleet.controller.transport import (
    Connection,
    HostKeyChanged,
    HostKeyRevoked,
    HostKeyUnknown,
    KnownHosts,
    KnownHostsCache,
    fingerprint,
)

# A pool of host keys (ECDSA: generated in a fraction of a millisecond); hosts share them.
POOL = [paramiko.ECDSAKey.generate() for _ in range(16)]
OTHER = paramiko.ECDSAKey.generate()  # listed nowhere
REVOKED = paramiko.ECDSAKey.generate()
RSA = paramiko.RSAKey.generate(1024)  # a second key type


def line(names: str, key: paramiko.PKey) -> str:
    return f"{names} {key.get_name()} {key.get_base64()}"


def hashed(name: str) -> str:
    return paramiko.HostKeys.hash_host(name)


def known_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def host(name: str, address: str, port: int, kh: Path) -> Host:
    return Host(name, {"ansible_host": address, "ansible_port": port,
                       "mlfleet_known_hosts": str(kh)})  # fmt: skip


def verdict(conn: Connection, server_key: paramiko.PKey) -> None:
    """What a connect of `conn` decides once the host has shown `server_key`: our code
    (the file from the cache, the client `host_key_client` prepares) and then paramiko's
    (client.py, SSHClient.connect, from `server_hostkey_name` to BadHostKeyException), a
    refusal said as `Connection._refusal` says it. Raises, or returns: accepted."""
    address, port = conn.host.address, conn.host.port
    known = conn.known_hosts_cache.get(conn.host.known_hosts, conn.host.name)
    client = conn.host_key_client(known, address, port)
    name = known_name(address, port)  # paramiko: server_hostkey_name
    try:
        ours = client.get_host_keys().get(name)
        if ours is None:
            client._policy.missing_host_key(client, name, server_key)  # type: ignore[attr-defined]
        else:
            our_key = ours.get(server_key.get_name())
            if our_key != server_key:
                if our_key is None:
                    our_key = list(ours.values())[0]  # noqa: RUF015 (as paramiko has it)
                raise paramiko.BadHostKeyException(address, server_key, our_key)
    except paramiko.BadHostKeyException as exc:
        raise conn._refusal(exc, known, address, port) from None


# --- a fleet's file: 2,000 lines, 1,000 connections ------------------------------------------


def fleet_file(tmp_path: Path) -> Tuple[Path, List[Tuple[str, int, paramiko.PKey]]]:
    """A known_hosts of 2,000 lines: 1,000 hosts of the fleet (odd ones on port 22, even
    ones as [host]:2222; hashed: those ending in 3 or 4; one in five with an RSA key on a
    second line), 797 other machines, a comment, a certificate authority and a revoked key.
    The fleet as (address, port, key)."""
    lines: List[str] = ["# fleet", f"@cert-authority *.fleet {line('', OTHER).strip()}",
                        f"@revoked * {REVOKED.get_name()} {REVOKED.get_base64()}"]  # fmt: skip
    fleet: List[Tuple[str, int, paramiko.PKey]] = []
    for i in range(1000):
        address, port, key = f"10.1.{i // 250}.{i % 250}", 22 if i % 2 else 2222, POOL[i % 16]
        name = known_name(address, port)
        lines.append(line(hashed(name) if i % 10 in (3, 4) else name, key))
        if i % 5 == 0:
            lines.append(line(name, RSA))
        fleet.append((address, port, key))
    for i in range(797):
        lines.append(line(f"other-{i}.example,10.9.{i // 250}.{i % 250}", POOL[(i + 5) % 16]))
    kh = tmp_path / "known_hosts"
    kh.write_text("\n".join(lines) + "\n")
    assert len(kh.read_text().splitlines()) == 2000
    return kh, fleet


def test_a_thousand_connections_parse_the_file_once_and_judge_each_key_right(
    tmp_path: Path, parses: List[str]
) -> None:
    kh, fleet = fleet_file(tmp_path)
    cache = KnownHostsCache()
    conns = [Connection(host(f"h{i}", a, p, kh), known_hosts_cache=cache)
             for i, (a, p, _) in enumerate(fleet)]  # fmt: skip
    for conn, (_, _, key) in zip(conns, fleet):
        verdict(conn, key)  # the right key: accepted
    for i in (0, 5):  # the RSA key too where it is listed ([host]:2222, on 22)
        verdict(conns[i], RSA)
    assert parses == [str(kh)]

    # Plain [host]:2222, plain on 22, hashed on 22, hashed [host]:2222.
    for i, port in ((0, 2222), (1, 22), (3, 22), (4, 2222)):
        assert conns[i].host.port == port
        with pytest.raises(HostKeyChanged) as changed:
            verdict(conns[i], OTHER)
        assert str(changed.value).startswith(
            f"h{i} ({conns[i].host.address}): host key changed: known_hosts has"
            f" {fingerprint(fleet[i][2])}, the host presented {fingerprint(OTHER)}"
        )
    for i in (1, 2, 3, 4):  # no RSA key listed for them: the ECDSA one compared
        with pytest.raises(HostKeyChanged, match=re.escape(fingerprint(fleet[i][2]))):
            verdict(conns[i], RSA)
    for i in (0, 3):
        with pytest.raises(HostKeyRevoked, match=rf"marked @revoked in {re.escape(str(kh))}:3 "):
            verdict(conns[i], REVOKED)
    stranger = Connection(host("new", "10.200.0.1", 22, kh), known_hosts_cache=cache)
    with pytest.raises(HostKeyUnknown, match=r"host key of 10\.200\.0\.1 .* is not in "):
        verdict(stranger, POOL[0])
    # A name listed with port 22 is not the same host on another port, and back.
    moved = Connection(host("h1-moved", fleet[1][0], 2222, kh), known_hosts_cache=cache)
    with pytest.raises(HostKeyUnknown):
        verdict(moved, fleet[1][2])
    assert parses == [str(kh)]


def test_a_client_gets_only_its_hosts_keys(tmp_path: Path) -> None:
    kh, fleet = fleet_file(tmp_path)
    conn = Connection(
        host("h10", fleet[10][0], fleet[10][1], kh), known_hosts_cache=KnownHostsCache()
    )
    known = conn.known_hosts_cache.get(str(kh), "h10")
    client = conn.host_key_client(known, fleet[10][0], fleet[10][1])
    held = client.get_host_keys()
    assert [(n, held[n].keys()) for n in held] == [
        (known_name(*fleet[10][:2]), [fleet[10][2].get_name(), "ssh-rsa"])
    ]


def whole_file_store(known: KnownHosts) -> paramiko.HostKeys:
    """A client's key store as mlfleet filled it before: every (unrevoked) key of the file,
    the first of a type for a name."""
    store, seen = paramiko.HostKeys(), set()
    for names, key in known.entries:
        for name in names:
            if (name, key.get_name()) not in seen:
                seen.add((name, key.get_name()))
                store.add(name, key.get_name(), key)
    return store


def found(store: paramiko.HostKeys, name: str) -> Optional[List[Tuple[str, bytes]]]:
    """What paramiko finds for `name`: its key types in order, and the key of each."""
    sub = store.lookup(name)
    return None if sub is None else [(t, sub[t].asbytes()) for t in sub]


def test_the_keys_looked_up_are_those_paramiko_finds_in_the_whole_file() -> None:
    a, b, c = POOL[:3]
    text = "\n".join([
        line("web", a), line("web", b),  # a second key of a type for a name: not used
        line("web,10.0.0.5", RSA),  # another type, listed later: second in paramiko's order
        line(hashed("web"), c), line(hashed("web"), a),  # hashed: every salt is another name
        line(hashed("[web]:2222") + ",[web]:2222", b),
        line(f"{hashed('db')},db", a),
        line("[db]:22", b),  # port 22 is written plain: a name paramiko never looks up
        line("DB", c),  # names are compared as written
        f"@revoked * {c.get_name()} {c.get_base64()}",
    ])  # fmt: skip
    known = KnownHosts.parse(text, "kh")
    whole = whole_file_store(known)
    names = ["web", "10.0.0.5", "[web]:2222", "db", "[db]:22", "DB", "nope", "[nope]:2222",
             hashed("web")]  # fmt: skip
    for name in names:
        mine = paramiko.HostKeys()
        known.fill(mine, name)
        assert found(mine, name) == found(whole, name), name
    # The key types of every entry found, in order (the first one is the type paramiko
    # asks the host for), each with the first key of its type (the one compared); the
    # hashed name with the revoked key is not one of them.
    assert found(whole, "web") == [(a.get_name(), a.asbytes()), ("ssh-rsa", RSA.asbytes()),
                                   (a.get_name(), a.asbytes())]  # fmt: skip
    assert found(whole, "DB") is None  # its key is revoked


def test_a_hashed_name_paramiko_cannot_match_matches_nothing() -> None:
    _, _, salt, digest = hashed("web").split("|")
    bad = [
        # paramiko's own lookup fails on these with an AssertionError (a salt not of 20 bytes)
        "|1|bm90IHR3ZW50eSBieXRlcw==|eA==", "|1|!!|x", "|1|",
        # and never matches these: it compares the text it writes, canonical base64
        f"|1|{salt[:4]}!{salt[4:]}|{digest}", f"|1|{salt}|{digest}|", f"|1|{salt}|{digest[:-1]}",
    ]  # fmt: skip
    assert paramiko.HostKeys.hash_host("web", salt) == f"|1|{salt}|{digest}"
    known = KnownHosts.parse("\n".join(line(b, POOL[0]) for b in bad) + "\n" +
                             line(f"|1|{salt}|{digest}", POOL[1]), "kh")  # fmt: skip
    assert known.keys_for("web") == [(f"|1|{salt}|{digest}", POOL[1])]
    assert [known.keys_for(b) for b in bad] == [[(b, POOL[0])] for b in bad]  # as written
    paramikos = whole_file_store(KnownHosts.parse("\n".join(line(b, POOL[0]) for b in bad[3:]) +
                                                  "\n" + line(hashed("web"), POOL[1]), "kh"))  # fmt: skip
    assert found(paramikos, "web") == [(POOL[1].get_name(), POOL[1].asbytes())]


# --- a file that changes -----------------------------------------------------------------


def _rewrite_in_place(kh: Path, text: str) -> None:
    st = kh.stat()
    kh.write_text(text)
    # Same size; an mtime surely other than the one read (timestamps are coarse).
    os.utime(kh, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def _replace_by_rename(kh: Path, text: str) -> None:
    st = kh.stat()
    new = kh.with_name("known_hosts.new")
    new.write_text(text)
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the inode tells
    new.replace(kh)


@pytest.mark.parametrize("change", [_rewrite_in_place, _replace_by_rename])
def test_a_file_changed_between_connections_is_read_again(
    tmp_path: Path, parses: List[str], change: Callable[[Path, str], None]
) -> None:
    kh = tmp_path / "known_hosts"
    old, new = POOL[1], POOL[2]
    kh.write_text(line("edge-1", old) + "\n")
    cache = KnownHostsCache()
    conn = Connection(host("edge-1", "edge-1", 22, kh), known_hosts_cache=cache)
    verdict(conn, old)
    verdict(conn, old)
    assert len(parses) == 1  # unchanged: not read again
    change(kh, line("edge-1", new) + "\n")
    assert kh.stat().st_size == len(line("edge-1", old)) + 1
    with pytest.raises(HostKeyChanged):
        verdict(conn, old)
    verdict(conn, new)
    assert len(parses) == 2


def test_a_file_that_appears_or_goes_away_is_read_again(tmp_path: Path, parses: List[str]) -> None:
    kh = tmp_path / "ssh" / "known_hosts"
    conn = Connection(host("edge-1", "edge-1", 22, kh), known_hosts_cache=KnownHostsCache())
    with pytest.raises(HostKeyUnknown):
        verdict(conn, POOL[1])
    kh.parent.mkdir()
    kh.write_text(line("edge-1", POOL[1]) + "\n")
    verdict(conn, POOL[1])
    kh.unlink()
    with pytest.raises(HostKeyUnknown):
        verdict(conn, POOL[1])
    assert len(parses) == 3


# --- threads -------------------------------------------------------------------------------


def in_threads(n: int, work: Callable[[int], None]) -> Dict[int, BaseException]:
    """Run work(0..n-1) in n threads started together; the exceptions by index."""
    start = threading.Barrier(n)
    errors: Dict[int, BaseException] = {}

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return errors


@pytest.fixture
def slow_parse(monkeypatch: pytest.MonkeyPatch, parses: List[str]) -> Iterator[List[str]]:
    """KnownHosts.parse, counted and slowed down so that every thread asks while the first
    one is still parsing."""
    counted = KnownHosts.parse.__func__  # type: ignore[attr-defined]

    def slow(cls: type, text: str, path: str) -> KnownHosts:
        time.sleep(0.2)
        return counted(cls, text, path)

    monkeypatch.setattr(KnownHosts, "parse", classmethod(slow))
    yield parses


def test_fifty_threads_looking_up_at_once_parse_once(tmp_path: Path, slow_parse: List[str]) -> None:
    kh, fleet = fleet_file(tmp_path)
    cache = KnownHostsCache()
    picks = [fleet[i * 20 + 3 * (i % 2)] for i in range(50)]  # plain and hashed

    def look_up(i: int) -> None:
        address, port, key = picks[i]
        conn = Connection(host(f"h{i}", address, port, kh), known_hosts_cache=cache)
        verdict(conn, key)
        with pytest.raises(HostKeyChanged):
            verdict(conn, OTHER)

    assert in_threads(50, look_up) == {}
    assert slow_parse == [str(kh)]


def test_new_keys_from_many_threads_are_written_once_each_as_whole_lines(
    tmp_path: Path, parses: List[str]
) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(line("old", POOL[0]))  # no newline at the end
    cache = KnownHostsCache()
    # 60 threads: 30 new hosts (half on port 2222), each connected to twice at once.
    hosts = [(f"10.2.0.{i}", 22 if i % 2 else 2222, POOL[i % 16]) for i in range(30)]

    def connect(i: int) -> None:
        address, port, key = hosts[i % 30]
        h = host(f"h{i}", address, port, kh)
        verdict(Connection(h, accept_new_host_keys=True, known_hosts_cache=cache), key)

    assert in_threads(60, connect) == {}
    written = kh.read_text()
    assert written.endswith("\n")
    expected = [line("old", POOL[0])] + [line(known_name(a, p), k) for a, p, k in hosts]
    assert sorted(written.splitlines()) == sorted(expected)
    assert len(parses) == 1  # our own lines: known without reading the file again

    # The same run knows them: the key accepted, another refused, nothing written.
    for i, (address, port, key) in enumerate(hosts):
        conn = Connection(host(f"again{i}", address, port, kh), accept_new_host_keys=True,
                          known_hosts_cache=cache)  # fmt: skip
        verdict(conn, key)
        with pytest.raises(HostKeyChanged):
            verdict(conn, OTHER)
    assert kh.read_text() == written
    assert len(parses) == 1
    # And another run reads them from the file.
    fresh = KnownHostsCache().get(str(kh), "h0")
    assert fresh.keys_for(known_name(*hosts[1][:2])) == [(known_name(*hosts[1][:2]), hosts[1][2])]


def test_two_new_keys_for_one_host_at_once_record_one_and_refuse_the_other(
    tmp_path: Path, parses: List[str]
) -> None:
    kh = tmp_path / "ssh" / "known_hosts"  # no file yet, no directory
    cache = KnownHostsCache()
    shown = [POOL[1], POOL[2]]

    def connect(i: int) -> None:
        conn = Connection(host(f"h{i}", "edge-1", 22, kh), accept_new_host_keys=True,
                          known_hosts_cache=cache)  # fmt: skip
        verdict(conn, shown[i])

    errors = in_threads(2, connect)
    assert len(errors) == 1 and isinstance(next(iter(errors.values())), HostKeyChanged)
    recorded = shown[1 - next(iter(errors))]
    assert kh.read_text() == line("edge-1", recorded) + "\n"
    assert len(parses) == 1  # of no file: the line made it, known without reading it


def test_a_key_that_cannot_be_recorded_is_said_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kh = tmp_path / "known_hosts"

    def disk_full(path: str, line: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(transport, "_append_line", disk_full)
    conn = Connection(host("h", "edge-1", 22, kh), accept_new_host_keys=True,
                      known_hosts_cache=KnownHostsCache())  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        verdict(conn, POOL[1])
    assert str(caught.value).startswith(
        f"h: cannot record the host key of edge-1 ({fingerprint(POOL[1])}) in {kh}: No space left on device"
    )


def test_a_revoked_key_is_not_recorded_even_if_revoked_meanwhile(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    cache = KnownHostsCache()
    conn = Connection(
        host("h", "edge-1", 22, kh), accept_new_host_keys=True, known_hosts_cache=cache
    )
    known = cache.get(str(kh), "h")  # the file as the connection started
    with kh.open("a") as fh:  # revoked by someone else meanwhile
        fh.write(f"@revoked * {REVOKED.get_name()} {REVOKED.get_base64()}\n")
    client = conn.host_key_client(known, "edge-1", 22)
    with pytest.raises(HostKeyRevoked, match=rf"in {kh}:1 "):
        client._policy.missing_host_key(client, "edge-1", REVOKED)  # type: ignore[attr-defined]
    assert kh.read_text().count("\n") == 1


def test_a_line_written_by_someone_else_meanwhile_is_read(
    tmp_path: Path, parses: List[str]
) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text(line("edge-0", POOL[0]) + "\n")
    cache = KnownHostsCache()
    new = Connection(
        host("h1", "edge-1", 22, kh), accept_new_host_keys=True, known_hosts_cache=cache
    )
    verdict(new, POOL[1])
    with kh.open("a") as fh:
        fh.write(line("edge-2", POOL[2]) + "\n")
    verdict(Connection(host("h2", "edge-2", 22, kh), known_hosts_cache=cache), POOL[2])
    assert len(parses) == 2
