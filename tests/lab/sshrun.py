"""A paramiko connection to a lab host with strict host-key checking, for the lab tests."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import paramiko


def connect(host: Dict[str, Any], known_hosts: str | None = None) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts or host["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host["address"], port=host["ssh_port"], username=host["ssh_user"],
        key_filename=host["ssh_key"], look_for_keys=False, allow_agent=False, timeout=10,
    )  # fmt: skip
    return client


def ssh(
    host: Dict[str, Any], command: str, timeout: float = 180, stdin: bytes | None = None
) -> Tuple[int, str, str]:
    """Run `command` on the host, `stdin` on its standard input; (exit status, stdout,
    stderr)."""
    client = connect(host)
    try:
        to, stdout, stderr = client.exec_command(command, timeout=timeout)
        if stdin is not None:
            to.write(stdin)
            to.channel.shutdown_write()
        out = stdout.read().decode()
        err = stderr.read().decode()
        return stdout.channel.recv_exit_status(), out, err
    finally:
        client.close()
