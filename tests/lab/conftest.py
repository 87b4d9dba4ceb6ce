"""Lab fixtures shared by the agent tests: the zipapp copied to every engine host over SFTP."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import pytest

from mlfleet.agent.bundle import build_zipapp
from mlfleet.controller.lab import lab_registry
from tests.lab.sshrun import connect, ssh

ENGINE_HOSTS = [
    "edge-a100",
    "edge-t4",
    "edge-4090",
    "edge-mi210",
    "edge-cpu",
    "edge-air",
    "edge-disk",
]


@pytest.fixture(scope="session")
def agent_hosts(lab, tmp_path_factory) -> Dict[str, Any]:
    """The lab, with the agent zipapp in every engine host's agent directory."""
    bundle = build_zipapp(tmp_path_factory.mktemp("agent"))
    for name in ENGINE_HOSTS:
        put(lab["hosts_by_name"][name], bundle.path.read_bytes(), "mlfleet-agent.pyz")
    return lab


def put(host: Dict[str, Any], data: bytes, name: str) -> str:
    """Copy bytes into the host's agent directory over SFTP; returns the remote path."""
    path = f"{host['agent_dir']}/{name}"
    client = connect(host)
    try:
        sftp = client.open_sftp()
        with sftp.open(path, "wb") as fh:
            fh.write(data)
        sftp.close()
    finally:
        client.close()
    return path


def agent(
    host: Dict[str, Any], args: str, timeout: float = 300, stdin: bytes | None = None
) -> Tuple[int, str, str]:
    """Run the zipapp on the host, as the controller will: python3 + the pyz, over SSH."""
    command = f'python3 "$MLFLEET_AGENT_DIR/mlfleet-agent.pyz" {args}'
    return ssh(host, command, timeout=timeout, stdin=stdin)


def engine_pull(lab: Dict[str, Any], host: Dict[str, Any], image: str) -> None:
    """Pull `image` on a host's engine with the lab's login, through the engine's API (its
    socket is on this machine), as `docker login` + `docker pull` would: no login is left on
    the host."""
    from mlfleet.agent.engine_api import EngineAPI
    from mlfleet.agent.imageref import ImageRef

    name, tag = ImageRef.parse(image).engine_name_and_tag()
    for _ in EngineAPI(host["docker_host"]).pull(
        name, tag, auth=lab_registry.credential(lab["registry"])
    ):
        pass


def apply_request(lab: Dict[str, Any], desired: Dict[str, Any]) -> bytes:
    """`apply -`'s stdin as the controller sends it: the desired state and the lab
    registry's credential (on the SSH session only, never in a file on the host)."""
    request = {"schema": 1, "desired": desired, "credential": None}
    credential = lab_registry.credential(lab["registry"])
    if credential is not None:
        request["credential"] = credential.to_dict()
    return json.dumps(request).encode()


def events(stderr: str) -> List[Dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
