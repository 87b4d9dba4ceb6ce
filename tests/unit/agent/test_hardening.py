"""What is hardened by default and which host paths a release may use: the lexical rules
(normalising) and, on the host, links resolved, the agent's own directory and the env file's
owner and mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mlfleet.agent.desired import ContainerSpec, Mount
from mlfleet.agent.hardening import (
    env_file_owner_problem,
    host_path_problem,
    normalise,
    sensitive_place,
)


@pytest.mark.parametrize(
    ("path", "normal"),
    [("//etc", "/etc"), ("///etc//", "/etc"), ("/etc/../etc/", "/etc"), ("/./srv/w/.", "/srv/w"),
     ("/..", "/"), ("//", "/")],
)  # fmt: skip
def test_normalise(path: str, normal: str):
    assert normalise(path) == normal


@pytest.mark.parametrize(
    ("path", "place"),
    [("/", "/"), ("/etc", "/etc"), ("/etc/ssl/certs", "/etc"), ("/var/run/docker.sock", "/var/run"),
     ("/srv/w", None), ("/etcetera", None), ("/usr/share/models", None), ("/var/lib/x", None),
     ("/home", "/home"), ("/home/app/models", None)],
)  # fmt: skip
def test_sensitive_place(path: str, place: object):
    assert sensitive_place(path) == place


REGULAR = stat.S_IFREG | 0o600


@pytest.mark.parametrize(
    ("uid", "mode", "problem"),
    [
        (0, REGULAR, None),
        (1000, REGULAR, None),  # the agent's own user
        (0, stat.S_IFREG | 0o644, None),
        (1001, REGULAR, "env file /srv/m.env is owned by uid 1001, not root or the agent's user"
                        " (uid 1000); chown root /srv/m.env"),
        (0, stat.S_IFREG | 0o620, "env file /srv/m.env is writable by its group or others"
                                  " (mode 0620); chmod go-w /srv/m.env"),
        (0, stat.S_IFREG | 0o606, "writable by its group or others (mode 0606)"),
        (0, stat.S_IFIFO | 0o600, "env file /srv/m.env is not a regular file"),
    ],
)  # fmt: skip
def test_env_file_owner_and_mode(uid: int, mode: int, problem: object):
    found = env_file_owner_problem("/srv/m.env", uid, mode, agent_uid=1000)
    assert found == problem or (problem is not None and found and str(problem) in found)


def test_a_link_to_a_sensitive_path_is_refused_on_the_host(tmp_path: Path):
    link = tmp_path / "weights"
    link.symlink_to("/etc")
    spec = ContainerSpec(mounts=[Mount(str(link), "/data")])
    assert host_path_problem(spec, str(tmp_path / "agent")) == (
        f"mount source {link} links to /etc, which is /etc, a sensitive host path; name /etc in"
        " container.allow_mounts if the model really needs it"
    )
    spec.allow_mounts = ["/etc"]
    assert host_path_problem(spec, str(tmp_path / "agent")) is None


def test_the_agents_own_directory_is_refused_on_the_host(tmp_path: Path):
    agent = tmp_path / "agent"
    (agent / "cache").mkdir(parents=True)
    spec = ContainerSpec(mounts=[Mount(str(agent / "cache") + "/", "/data")])
    problem = host_path_problem(spec, str(agent))
    assert problem is not None and f"is under {agent}, a sensitive host path" in problem
    beside = tmp_path / "agent-data"
    beside.mkdir()
    assert host_path_problem(ContainerSpec(mounts=[Mount(str(beside), "/d")]), str(agent)) is None


def test_an_env_file_others_can_write_is_refused_on_the_host(tmp_path: Path):
    env = tmp_path / "m.env"
    env.write_text("TOKEN=s3cret\n")
    env.chmod(0o666)
    spec = ContainerSpec(env_file=str(env))
    assert host_path_problem(spec, str(tmp_path / "agent")) == (
        f"env file {env} is writable by its group or others (mode 0666); chmod go-w {env}"
    )
    env.chmod(0o600)
    assert host_path_problem(spec, str(tmp_path / "agent")) is None
    assert os.stat(env).st_uid == os.geteuid()  # the agent's own user: accepted


def test_an_env_file_linking_into_the_agents_directory_is_refused(tmp_path: Path):
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "registry-credentials.json").write_text("{}")
    link = tmp_path / "m.env"
    link.symlink_to(agent / "registry-credentials.json")
    problem = host_path_problem(ContainerSpec(env_file=str(link)), str(agent))
    assert problem is not None and problem.startswith(f"env file {link} links to {agent}/")


def test_a_missing_path_is_left_to_the_preflight(tmp_path: Path):
    spec = ContainerSpec(mounts=[Mount(str(tmp_path / "nope"), "/d")], env_file="/srv/none.env")
    assert host_path_problem(spec, str(tmp_path / "agent")) is None


def test_the_apply_preflight_refuses_before_anything_is_pulled_or_stopped(tmp_path: Path):
    """Wired into apply's preflight: nothing pulled, nothing started, the reason in one line."""
    from mlfleet.agent.apply import apply
    from mlfleet.agent.protocol import ApplyStatus, Phase
    from tests.unit.agent.fakes import make_desired, make_host

    host = make_host(tmp_path)
    link = tmp_path / "weights"
    link.symlink_to("/proc")
    container = {"ports": [], "mounts": [{"source": str(link), "target": "/data"}]}
    result = apply(host, make_desired("v1", container=container, health={"docker": False}))
    assert (result.status, result.phase) == (ApplyStatus.FAILED, Phase.PREFLIGHT)
    assert result.reason == (
        f"mount source {link} links to /proc, which is /proc, a sensitive host path; name /proc"
        " in container.allow_mounts if the model really needs it"
    )
    assert host.engine.running_tags() == [] and host.store.current("sentiment") is None
