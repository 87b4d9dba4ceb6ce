"""Playbooks: the lab's sentiment.yml gives the hand-written lab release, templating fills in
host variables, and every kind of bad input is refused with its exact file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest

from mlfleet.agent.desired import DesiredState
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.lab.images import REPOSITORY
from mlfleet.controller.lab.model_data import make_model, score, write_model
from mlfleet.controller.lab.sample_release import SAMPLE_TEXT, sentiment_desired
from mlfleet.controller.playbook import (
    Playbook,
    RolloutPolicy,
    find_playbook,
    hardening_lines,
    load_playbook,
)
from tests.paths import REPO

SENTIMENT = REPO / "playbooks" / "sentiment.yml"
LAB_VARS = {"mlfleet_registry": "10.77.0.1:5000", "model_data_dir": "/srv/w"}
# The smallest valid playbook: four lines, so whatever a test appends starts at line 5.
MINIMAL = "app: m\nimage: reg/m\nvariants:\n  - {name: cpu}\n"


def write(tmp_path: Path, text: str, name: str = "p.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> Playbook:
    return load_playbook(write(tmp_path, text))


def refused(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value


def state(playbook: Playbook, host_vars: Dict[str, Any], tag: str = "v1") -> Dict[str, Any]:
    return playbook.desired_state(host_vars, "edge01", tag, "d-1").to_dict()


# --------------------------------------------------------------------------- sentiment.yml


def test_sentiment_gives_the_lab_release_of_sample_release(tmp_path: Path):
    write_model(tmp_path)  # sample_release reads the weights from the host's data dir
    host_vars = dict(LAB_VARS, model_data_dir=str(tmp_path))
    playbook = load_playbook(SENTIMENT)
    mine = playbook.desired_state(host_vars, "edge-t4", "v3", "d-7")
    sample = DesiredState.from_dict(sentiment_desired("10.77.0.1:5000", str(tmp_path), "v3"))

    assert mine.app == sample.app and mine.tag == sample.tag == "v3" and mine.deployment == "d-7"
    assert mine.variants == sample.variants
    assert mine.container == sample.container
    assert mine.health.docker == sample.health.docker
    assert mine.health.http == sample.health.http
    assert mine.health.tcp == sample.health.tcp == [] and mine.health.exec == []
    assert mine.health.timing == sample.health.timing
    assert (mine.monitor_s, mine.retain, mine.strategy, mine.grace_s) == (
        sample.monitor_s, sample.retain, sample.strategy, sample.grace_s,
    )  # fmt: skip
    [check], [theirs] = mine.health.inference, sample.health.inference
    assert (check.port, check.path, check.request) == (theirs.port, theirs.path, theirs.request)
    # One playbook serves every tag: the answer is checked, not which tag gave it.
    assert check.expect == {"predictions": theirs.expect["predictions"]}
    assert check.tolerance == 0.001


def test_sentiment_for_a_lab_host(tmp_path: Path):
    playbook = load_playbook(SENTIMENT)
    assert playbook.app == "sentiment" and playbook.source == str(SENTIMENT)
    assert playbook.variant_names() == ["cuda12", "cuda11", "rocm", "cpu"]
    assert playbook.images(LAB_VARS, "edge-t4", "v2") == {
        name: f"10.77.0.1:5000/{REPOSITORY}:v2-{name}" for name in playbook.variant_names()
    }
    result = state(playbook, LAB_VARS)
    assert DesiredState.from_dict(result).to_dict() == result
    assert result["container"]["mounts"] == [
        {"source": "/srv/w", "target": "/data", "read_only": True}
    ]
    assert result["container"]["ports"] == [
        {"container": 8080, "host": 8080, "protocol": "tcp", "host_ip": ""}
    ]
    assert playbook.rollout == RolloutPolicy(
        canary="per-variant", batch="50%", max_fail=0, on_failure="pause"
    )


def test_sentiment_expects_what_the_lab_weights_answer():
    playbook = load_playbook(SENTIMENT)
    [check] = playbook.health["inference"]
    assert check["request"] == {"text": SAMPLE_TEXT}
    assert check["expect"] == {"predictions": [score(make_model(), SAMPLE_TEXT)]}


# --------------------------------------------------------------------------- templating


def test_undefined_variable_names_host_key_variable_and_line(tmp_path: Path):
    playbook = load(tmp_path, MINIMAL + "container:\n  mounts: ['{{ model_dir }}:/data']\n")
    with pytest.raises(ConfigError) as info:
        playbook.desired_state({"model_data_dir": "/x"}, "edge07", "v1", "d")
    err = info.value
    assert err.where == f"{tmp_path / 'p.yml'}:6"
    assert "host edge07" in err.message and "`container.mounts[0]`" in err.message
    assert "{{ model_dir }}" in err.message and "did you mean model_data_dir" in err.message
    assert "define model_dir in the inventory" in (err.hint or "")


def test_templates_with_and_without_spaces_and_inventory_hostname(tmp_path: Path):
    playbook = load(
        tmp_path,
        "app: m\nimage: '{{reg}}/team/m'\nvariants: [{name: cpu}]\n"
        "container:\n"
        "  env: {HOST: '{{ inventory_hostname }}', PORT: 8080, URL: 'http://{{  reg  }}/x'}\n"
        "  command: [serve, '--name={{ inventory_hostname }}', 3]\n",
    )
    result = state(playbook, {"reg": "r.example:5000"})
    assert result["variants"][0]["image"] == "r.example:5000/team/m:v1-cpu"
    assert result["container"]["env"] == {
        "HOST": "edge01", "PORT": "8080", "URL": "http://r.example:5000/x",
    }  # fmt: skip
    assert result["container"]["command"] == ["serve", "--name=edge01", "3"]


def test_jinja_beyond_plain_variables_is_refused_at_load(tmp_path: Path):
    err = refused(
        tmp_path, "app: m\nimage: \"{{ reg | default('x') }}/m\"\nvariants: [{name: a}]\n"
    )
    assert err.where == f"{tmp_path / 'p.yml'}:2" and "no filters" in err.message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("reg:5000 /x", "whitespace"),
        ("reg;rm -rf", "whitespace"),
        ("reg$(id)", "shell metacharacter"),
        ("reg`id`", "shell metacharacter"),
        ("reg\n", "whitespace"),
        ("Reg/UPPER", "not an image repository"),
    ],
)
def test_rendered_image_is_checked(tmp_path: Path, value: str, problem: str):
    playbook = load(tmp_path, "app: m\nimage: '{{ reg }}/m'\nvariants: [{name: a}]\n")
    with pytest.raises(ConfigError) as info:
        playbook.images({"reg": value}, "edge01", "v1")
    assert info.value.where == f"{tmp_path / 'p.yml'}:2"
    assert problem in info.value.message and "check reg in the inventory" in (info.value.hint or "")


def test_rendered_paths_must_be_absolute_and_vars_must_be_scalars(tmp_path: Path):
    playbook = load(tmp_path, MINIMAL + "container:\n  mounts: ['{{ d }}:/data:rw']\n")
    with pytest.raises(ConfigError, match="not an absolute path") as info:
        state(playbook, {"d": "srv/w"})
    assert (info.value.where or "").endswith("p.yml:6")
    with pytest.raises(ConfigError, match="which is nothing"):
        state(playbook, {"d": None})
    assert state(playbook, {"d": "/srv/w"})["container"]["mounts"][0]["read_only"] is False


def test_variant_image_override_with_tag_and_variant(tmp_path: Path):
    playbook = load(
        tmp_path,
        "app: m\nvariants:\n"
        "  - {name: orin, gpu: nvidia, platform: jetson, l4t: '36.4',"
        " image: '{{ reg }}/m-l4t:{tag}-{variant}'}\n"
        "  - {name: cpu, image: 'docker.io/library/m@sha256:" + "a" * 64 + "'}\n",
    )
    assert playbook.images({"reg": "r:5000"}, "h", "v9") == {
        "orin": "r:5000/m-l4t:v9-orin",
        "cpu": "docker.io/library/m@sha256:" + "a" * 64,
    }
    result = state(playbook, {"reg": "r:5000"})
    assert result["variants"][0] == {
        "name": "orin", "gpu": "nvidia", "platform": "jetson", "l4t": "36.4",
        "image": "r:5000/m-l4t:v1-orin",
    }  # fmt: skip


def test_image_problems_at_load(tmp_path: Path):
    err = refused(tmp_path, "app: m\nimage: reg/m:v1\nvariants: [{name: a}]\n")
    assert (err.where or "").endswith("p.yml:2") and "repository only" in err.message
    err = refused(tmp_path, "app: m\nvariants:\n  - {name: a}\n  - {name: b, image: 'r/m:{tag}'}\n")
    assert (err.where or "").endswith("p.yml:1") and "variants a have no `image`" in err.message
    err = refused(tmp_path, "app: m\nvariants:\n  - {name: b, image: 'r/m'}\n")
    assert (err.where or "").endswith("p.yml:3") and "no tag or digest" in err.message
    err = refused(tmp_path, MINIMAL + "tag_template: '{tag}-{arch}'\n")
    assert (err.where or "").endswith("p.yml:5") and "only {tag} and {variant}" in err.message
    err = refused(tmp_path, MINIMAL + "tag_template: 'latest-{variant}'\n")
    assert (err.where or "").endswith("p.yml:5") and "must contain {tag}" in err.message


def test_tag_is_checked_and_tag_template_applies(tmp_path: Path):
    playbook = load(tmp_path, MINIMAL + "tag_template: '{variant}_{tag}'\n")
    assert playbook.images({}, "h", "2024.1") == {"cpu": "reg/m:cpu_2024.1"}
    with pytest.raises(ConfigError, match="not a Docker tag"):
        playbook.images({}, "h", "v1;reboot")


def test_minimal_playbook_leaves_the_rest_to_agent_defaults(tmp_path: Path):
    playbook = load(tmp_path, MINIMAL)
    assert playbook.rollout == RolloutPolicy()
    result = state(playbook, {})
    assert (
        result["health"]
        == DesiredState.from_dict(
            {
                "schema": 1,
                "app": "m",
                "deployment": "d",
                "tag": "v",
                "variants": [{"name": "c", "image": "i"}],
            }
        ).to_dict()["health"]
    )


def test_full_container_and_health(tmp_path: Path):
    playbook = load(
        tmp_path,
        MINIMAL + "container:\n"
        "  ports: ['127.0.0.1:9000:8080', '5353:53/udp', {host: 9001, container: 8081}]\n"
        "  env: {LOG_LEVEL: info}\n"
        "  env_file: /etc/mlfleet/m.env\n"
        "  mounts: [{source: /srv/a, target: /a, read_only: false}]\n"
        "  user: 10001\n"
        "  memory: 1.5g\n"
        "  cpus: 2\n"
        "  shm_size: 2048k\n"
        "  command: [python3, /opt/server.py]\n"
        "health:\n"
        "  docker: false\n"
        "  http: [{path: /ready, port: 8080, status: 204, body_contains: ok}]\n"
        "  tcp: [{port: 8081}]\n"
        "  exec: [{command: [test, -f, /tmp/ready]}]\n"
        "  start_period: 0\n"
        "  interval: 1m30s\n"
        "  timeout: 1.5\n"
        "  deadline: 1h\n",
    )
    result = state(playbook, {})
    c, h = result["container"], result["health"]
    assert c["ports"] == [
        {"container": 8080, "host": 9000, "protocol": "tcp", "host_ip": "127.0.0.1"},
        {"container": 53, "host": 5353, "protocol": "udp", "host_ip": ""},
        {"container": 8081, "host": 9001, "protocol": "tcp", "host_ip": ""},
    ]
    assert c["env"] == {"LOG_LEVEL": "info"} and c["env_file"] == "/etc/mlfleet/m.env"
    assert c["mounts"] == [{"source": "/srv/a", "target": "/a", "read_only": False}]
    assert (c["user"], c["memory_mib"], c["cpus"], c["shm_mib"]) == ("10001", 1536, 2.0, 2)
    assert c["command"] == ["python3", "/opt/server.py"]
    assert h["docker"] is False and h["http"][0]["status"] == 204
    assert h["exec"] == [{"command": ["test", "-f", "/tmp/ready"]}]
    assert h["timing"] == {
        "start_period_s": 0.0, "interval_s": 90.0, "timeout_s": 1.5, "retries": 3,
        "deadline_s": 3600.0,
    }  # fmt: skip


# --------------------------------------------------------------------------- hardening


def test_a_playbook_without_hardening_keys_gets_the_hardened_defaults(tmp_path: Path):
    playbook = load(tmp_path, MINIMAL + "container:\n  ports: ['8080:8080']\n")
    c = state(playbook, {})["container"]
    assert (c["cap_add"], c["read_only"], c["writable"], c["pids_limit"]) == ([], True, [], 1024)
    assert c["allow_mounts"] == [] and c["ports"][0]["host_ip"] == ""
    assert hardening_lines(playbook) == [
        "ports published on every address (0.0.0.0 and ::): 8080/tcp; container.bind:"
        " 127.0.0.1 narrows them"
    ]
    assert hardening_lines(load(tmp_path, MINIMAL)) == []


HARDENING = (
    "container:\n"
    "  ports: ['8080:8080', '10.0.0.5:9090:9090', {host: 53, container: 53, protocol: udp}]\n"
    "  mounts: ['/etc/ssl/certs:/etc/ssl/certs', '/srv/cache:/cache:rw']\n"
    "  cap_add: [cap_net_bind_service, SYS_NICE]\n"
    "  read_only: false\n"
    "  writable: [/var/cache/model]\n"
    "  pids_limit: 4096\n"
    "  bind: 127.0.0.1\n"
    "  allow_mounts: [/etc/ssl/certs]\n"
    "  allow_root: true\n"
)


def test_the_hardening_keys_reach_the_desired_state(tmp_path: Path):
    c = state(load(tmp_path, MINIMAL + HARDENING), {})["container"]
    assert c["cap_add"] == ["NET_BIND_SERVICE", "SYS_NICE"]
    assert (c["read_only"], c["writable"], c["pids_limit"]) == (False, ["/var/cache/model"], 4096)
    assert c["allow_mounts"] == ["/etc/ssl/certs"]
    # `bind` fills in the ports that name no address of their own.
    assert [p["host_ip"] for p in c["ports"]] == ["127.0.0.1", "10.0.0.5", "127.0.0.1"]


def test_hardening_lines_say_what_the_playbook_relaxes(tmp_path: Path):
    assert hardening_lines(load(tmp_path, MINIMAL + HARDENING)) == [
        "capabilities: NET_BIND_SERVICE, SYS_NICE added (all others dropped)",
        "root filesystem writable (read_only: false)",
        "pids limit raised to 4096 (default 1024)",
        "may run as root (allow_root: true)",
        "sensitive host paths allowed: /etc/ssl/certs (allow_mounts)",
        "host paths mounted read-write: /srv/cache",
    ]
    lowered = load(tmp_path, MINIMAL + "container:\n  pids_limit: 64\n  read_only: true\n")
    assert hardening_lines(lowered) == []


@pytest.mark.parametrize(
    ("tail", "line", "message"),
    [
        ("container:\n  cap_add: [NET_BIND_SERVIC]\n", 6,
         "`container.cap_add[0]`: 'NET_BIND_SERVIC' is not a capability Docker knows; did you"
         " mean NET_BIND_SERVICE?"),
        ("container:\n  cap_add:\n    - CHOWN\n    - all\n", 8,
         "`container.cap_add[1]`: ALL would give back every capability; list the ones the"
         " model needs"),
        ("container:\n  cap_add: NET_RAW\n", 6,
         "`container.cap_add`: expected a list, got the string 'NET_RAW'"),
        ("container:\n  pids_limit: 0\n", 6,
         "`container.pids_limit`: expected a whole number 1-4194304 (processes and threads);"
         " got 0"),
        ("container:\n  read_only: 'no'\n", 6,
         "`container.read_only`: expected true or false, got 'no'"),
        ("container:\n  bind: localhost\n", 6,
         "`container.bind`: 'localhost' is not an IP address like 127.0.0.1"),
        ("container:\n  writable: [/]\n", 6,
         "`container.writable[0]`: '/' is the root filesystem (set read_only: false); a tmpfs"
         " cannot go there"),
        ("container:\n  mounts: ['/var/run/docker.sock:/var/run/docker.sock']\n", 6,
         "`container.mounts[0]`: '/var/run/docker.sock' is the Docker socket (whoever reaches"
         " it controls the host), a sensitive host path; name /var/run/docker.sock in"
         " container.allow_mounts if the model really needs it"),
        ("container:\n  mounts:\n    - {source: /etc/../etc, target: /x}\n", 7,
         "`container.mounts[0].source`: '/etc/../etc' is /etc, a sensitive host path; name"
         " /etc in container.allow_mounts if the model really needs it"),
        ("container:\n  env_file: /etc/default/model\n", 6,
         "`container.env_file`: '/etc/default/model' is under /etc, a sensitive host path;"
         " keep env files in /etc/mlfleet/ or outside the sensitive paths (or name"
         " /etc/default/model in container.allow_mounts)"),
        ("container:\n  user: '00'\n", 6,
         "`container.user`: '00' is root; set container.allow_root: true if the model really"
         " needs it"),
        ("container:\n  user: '000:1000'\n", 6, "`container.user`: '000:1000' is root;"),
        ("container:\n  user: 00\n", 6, "`container.user`: '0' is root;"),
        ('container:\n  ports: ["8080:8080\\n"]\n', 6,
         "`container.ports[0]`: '8080:8080\\n' is not \"host:container\""),
        ('container:\n  user: "app\\n"\n', 6,
         "`container.user`: 'app\\n' is not a user like"),
    ],
)  # fmt: skip
def test_hardening_mistakes_name_their_line(tmp_path: Path, tail: str, line: int, message: str):
    err = refused(tmp_path, MINIMAL + tail)
    assert err.where == f"{tmp_path / 'p.yml'}:{line}"
    assert err.message.startswith(message) and "\n" not in str(err)


# --------------------------------------------------------------------------- load errors


@pytest.mark.parametrize(
    ("tail", "line", "words"),
    [
        ("helth: {}\n", 5, "unknown key 'helth' in the playbook"),
        ("container:\n  ports: []\n  mountz: []\n", 7, "unknown key 'mountz' in container"),
        (
            "health:\n  http:\n    - {port: 80, paht: /x}\n",
            7,
            "unknown key 'paht' in health.http[0]",
        ),
        ("rollout:\n  serial: 2\n", 6, "unknown key 'serial' in rollout"),
    ],
)
def test_unknown_keys_at_every_level(tmp_path: Path, tail: str, line: int, words: str):
    err = refused(tmp_path, MINIMAL + tail)
    assert err.where == f"{tmp_path / 'p.yml'}:{line}" and words in err.message


def test_unknown_key_suggests_the_known_one(tmp_path: Path):
    assert refused(tmp_path, MINIMAL + "retian: 3\n").hint == "did you mean 'retain'?"


@pytest.mark.parametrize(
    ("tail", "line", "words"),
    [
        ("health:\n  http: [{port: 8080}]\n  interval: 5 sec\n", 7, "not a duration"),
        ("health:\n  timeout: 0s\n", 6, "must be above 0"),
        ("monitor: -1\n", 5, "expected a number >= 0"),
        ("health:\n  retries: 0\n", 6, "`health.retries`: expected a whole number >= 1"),
        ("retain: 1\n", 5, "`retain`: expected a whole number >= 2"),
        ("strategy: blue-green\n", 5, "one of auto, stop-first, start-first"),
    ],
)
def test_bad_durations_and_settings(tmp_path: Path, tail: str, line: int, words: str):
    err = refused(tmp_path, MINIMAL + tail)
    assert err.where == f"{tmp_path / 'p.yml'}:{line}" and words in err.message


@pytest.mark.parametrize(
    ("ports", "words"),
    [
        ("['8080']", 'is not "host:container"'),
        ("['8080:80x']", 'is not "host:container"'),
        ("['70000:80']", "outside 1-65535"),
        ("['80:80/sctp']", "tcp or udp"),
        ("['999.1.1.1:80:80']", "not an IP address"),
        ("[22:22]", "base-60"),
        ("['80:80', '80:81']", "already bound by container.ports[0]"),
        ("[{host: 80}]", "`container.ports[0].container`: required"),
    ],
)
def test_bad_port_strings(tmp_path: Path, ports: str, words: str):
    err = refused(tmp_path, MINIMAL + f"container:\n  ports: {ports}\n")
    assert err.where == f"{tmp_path / 'p.yml'}:6" and words in err.message


def test_bad_port_string_in_a_block_list_names_its_own_line(tmp_path: Path):
    err = refused(tmp_path, MINIMAL + "container:\n  ports:\n    - '80:80'\n    - 'x:80'\n")
    assert err.where == f"{tmp_path / 'p.yml'}:8" and "`container.ports[1]`" in err.message


@pytest.mark.parametrize(
    ("mount", "words"),
    [
        ("'/srv/w'", 'is not "source:target[:ro|rw]"'),
        ("'/srv/w:/data:rx'", 'is not "source:target[:ro|rw]"'),
        ("'/a:/b:ro:x'", 'is not "source:target[:ro|rw]"'),
        ("':/data'", 'is not "source:target[:ro|rw]"'),
        ("'srv/w:/data'", "not an absolute path"),
        ("'/srv/w:data'", "not an absolute path"),
        ("'/srv/my models:/data'", "whitespace"),
        ("'{{ d }};x:/data'", "shell metacharacter"),
        ("{source: /a}", "`container.mounts[0].target`: required"),
    ],
)
def test_bad_mount_strings(tmp_path: Path, mount: str, words: str):
    err = refused(tmp_path, MINIMAL + f"container:\n  mounts: [{mount}]\n")
    assert err.where == f"{tmp_path / 'p.yml'}:6" and words in err.message


def test_bad_variants_carry_the_line_of_their_item(tmp_path: Path):
    text = "app: m\nimage: r/m\nvariants:\n  - {name: a}\n  - {name: b, gpu: nvidia}\n"
    err = refused(tmp_path, text)
    assert err.where == f"{tmp_path / 'p.yml'}:5"
    assert "variants[1] (b)" in err.message and "`cuda` is required" in err.message
    err = refused(tmp_path, "app: m\nimage: r/m\nvariants:\n  - {name: a}\n  - {name: a}\n")
    assert (err.where or "").endswith("p.yml:5") and "already used by variants[0]" in err.message
    err = refused(tmp_path, "app: m\nimage: r/m\nvariants:\n  - name: a\n    cuda: 12.2\n")
    assert (err.where or "").endswith("p.yml:4") and "`cuda` applies only" in err.message
    err = refused(tmp_path, "app: m\nimage: r/m\nvariants: []\n")
    assert (err.where or "").endswith("p.yml:3") and "the list is empty" in err.message


@pytest.mark.parametrize(
    ("tail", "line", "words"),
    [
        ("container:\n  env: {DEBUG: true}\n", 6, "not a string"),
        ("container:\n  env: {1BAD: x}\n", 6, "not a valid environment variable name"),
        ("container:\n  memory: 512x\n", 6, "not a size"),
        ("container:\n  memory: 1000k\n", 6, "not a whole number of MiB"),
        ("container:\n  cpus: 0\n", 6, "expected a number above 0"),
        ("container:\n  user: root\n", 6, "is root"),
        ("container:\n  user: '0:0'\n", 6, "is root"),
        ("container:\n  command: python3 server.py\n", 6, "expected a list"),
        ("container:\n  env_file: secrets.env\n", 6, "not an absolute path"),
        ("health:\n  tcp: [{port: 9000}]\n", 6, "9000 is not published"),
        ("health:\n  http: [{port: 80, path: health}]\n", 6, "must start with /"),
        ("health:\n  inference: [{port: 80, path: /p, request: {}}]\n", 6, "expect`: required"),
        ("app2: x\n", 5, "did you mean"),
        ("container: [a]\n", 5, "`container`: expected a mapping"),
    ],
)
def test_other_bad_values(tmp_path: Path, tail: str, line: int, words: str):
    err = refused(tmp_path, MINIMAL + tail)
    assert err.where == f"{tmp_path / 'p.yml'}:{line}"
    assert words in err.message or words in (err.hint or "")


def test_root_user_with_allow_root(tmp_path: Path):
    playbook = load(tmp_path, MINIMAL + "container:\n  user: root\n  allow_root: true\n")
    assert state(playbook, {})["container"]["user"] == "root"


def test_required_keys_and_bad_files(tmp_path: Path):
    err = refused(tmp_path, "image: r/m\nvariants: [{name: a}]\n")
    assert (err.where or "").endswith("p.yml:1") and "`app`: required" in err.message
    err = refused(tmp_path, "app: Sentiment\nimage: r/m\nvariants: [{name: a}]\n")
    assert (err.where or "").endswith("p.yml:1") and "lowercase" in err.message
    assert refused(tmp_path, "").message == "the playbook is empty"
    assert "expected a mapping" in refused(tmp_path, "- a\n").message
    err = refused(tmp_path, MINIMAL + "app: n\n")
    assert (err.where or "").endswith("p.yml:5") and "duplicate key" in err.message
    with pytest.raises(ConfigError, match="cannot read"):
        load_playbook(tmp_path / "missing.yml")


# --------------------------------------------------------------------------- rollout


@pytest.mark.parametrize(
    ("rollout", "expected"),
    [
        ("{}", RolloutPolicy(canary=1, batch="25%", max_fail=0, on_failure="pause")),
        ("{canary: 0, batch: 5}", RolloutPolicy(canary=0, batch=5)),
        ("{batch: [1, 5, '20%']}", RolloutPolicy(batch=[1, 5, "20%"])),
        ("{batch: '100%', max_fail: '10%'}", RolloutPolicy(batch="100%", max_fail="10%")),
        ("{max_fail: 2, on_failure: rollback}", RolloutPolicy(max_fail=2, on_failure="rollback")),
        (
            "{max_fail: '0%', on_failure: continue}",
            RolloutPolicy(max_fail="0%", on_failure="continue"),
        ),
        # the command line's grammar: decimal percentages, whole numbers as text
        ("{max_fail: '33.3%', batch: '12.5%'}", RolloutPolicy(batch="12.5%", max_fail="33.3%")),
        ("{max_fail: '2', batch: '3', canary: '2'}", RolloutPolicy(canary=2, batch=3, max_fail=2)),
        ("{canary: per-variant}", RolloutPolicy(canary="per-variant")),
    ],
)
def test_rollout_policy(tmp_path: Path, rollout: str, expected: RolloutPolicy):
    assert load(tmp_path, MINIMAL + f"rollout: {rollout}\n").rollout == expected


@pytest.mark.parametrize(
    ("tail", "line", "words"),
    [
        ("rollout: {batch: 0}\n", 5, "`rollout.batch`: 0 must be at least 1 host"),
        ("rollout: {batch: '0%'}\n", 5, "must be more than 0% and at most 100%"),
        ("rollout: {batch: '150%'}\n", 5, "must be more than 0% and at most 100%"),
        ("rollout: {batch: half}\n", 5, "'half' must be a whole number or a percentage"),
        ("rollout: {batch: []}\n", 5, "list is empty"),
        ("rollout:\n  batch:\n    - 1\n    - 20 %%\n", 8, "`rollout.batch[1]`: '20 %%'"),
        ("rollout:\n  batch: [1, 0]\n", 6, "`rollout.batch[1]`"),
        ("rollout: {max_fail: -1}\n", 5, "`rollout.max_fail`: -1 must be 0 or more hosts"),
        ("rollout: {max_fail: '101%'}\n", 5, "must be between 0% and 100%"),
        ("rollout: {canary: -1}\n", 5, "`rollout.canary`"),
        ("rollout: {canary: per_variant}\n", 5, "or per-variant"),
        ("rollout: {on_failure: halt}\n", 5, "one of pause, rollback, continue"),
    ],
)
def test_bad_rollout_values(tmp_path: Path, tail: str, line: int, words: str):
    err = refused(tmp_path, MINIMAL + tail)
    assert err.where == f"{tmp_path / 'p.yml'}:{line}" and words in err.message


# --------------------------------------------------------------------------- find_playbook


def test_find_playbook(tmp_path: Path):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    with pytest.raises(ConfigError, match="no playbook") as info:
        find_playbook(tmp_path)
    assert info.value.where == str(folder) and "-p FILE" in (info.value.hint or "")
    only = write(folder, MINIMAL, "m.yml")
    (folder / "notes.txt").write_text("")
    (folder / ".m.yml.swp.yml").write_text("")
    assert find_playbook(tmp_path) == only and find_playbook(folder) == only


def test_several_playbooks_in_a_directory(tmp_path: Path):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    write(folder, MINIMAL, "b.yaml")
    write(folder, MINIMAL, "a.yml")
    with pytest.raises(ConfigError) as info:
        find_playbook(tmp_path)
    err = info.value
    assert err.where == str(folder) and err.message == "several playbooks: a.yml, b.yaml"
    assert err.hint == "use -p FILE to choose one"
    assert str(err) == f"{folder}: several playbooks: a.yml, b.yaml (use -p FILE to choose one)"


def test_the_shipped_playbooks_directory_has_exactly_sentiment():
    assert find_playbook(SENTIMENT.parent.parent) == SENTIMENT


# --------------------------------------------------------------------------- the agent's rules


@pytest.mark.parametrize(
    ("tail", "line", "words"),
    [
        # the agent's key path, mapped to the playbook's key and line
        (
            "container:\n  ports:\n    - {host: 80, container: 70000}\n",
            7,
            "`container.ports[0].container`: container port 70000 is outside 1-65535",
        ),
        ("health:\n  start_period: -1\n", 6, "`health.start_period`: expected a number >= 0"),
        ("health:\n  deadline: 0\n", 6, "`health.deadline`: 0.0 must be above 0"),
        ("grace: -5\n", 5, "`grace`: expected a number >= 0"),
        ("container:\n  shm_size: 0\n", 6, "`container.shm_size`"),
        ("container:\n  command: []\n", 6, "`container.command`: the list is empty"),
        ("container:\n  env:\n    A: x\n    2B: y\n", 8, "`container.env.2B`"),
        (
            "container:\n  mounts:\n    - {source: /a, target: b}\n",
            7,
            "`container.mounts[0].target`: 'b' is not an absolute path",
        ),
        (
            "container:\n  ports: ['80:80']\nhealth:\n  http:\n    - {port: 80, status: 99}\n",
            9,
            "`health.http[0].status`: expected an HTTP status 100-599",
        ),
    ],
)
def test_the_agents_rules_point_at_the_playbooks_line(
    tmp_path: Path, tail: str, line: int, words: str
):
    err = refused(tmp_path, MINIMAL + tail)
    assert err.where == f"{tmp_path / 'p.yml'}:{line}" and words in err.message
    assert len(str(err).splitlines()) == 1


def test_a_template_that_no_host_can_make_valid_is_refused_at_load(tmp_path: Path):
    err = refused(tmp_path, MINIMAL + "container:\n  mounts: ['data{{ d }}:/data']\n")
    assert err.where == f"{tmp_path / 'p.yml'}:6"
    assert "`container.mounts[0]`" in err.message and "not an absolute path" in err.message
    assert "{{ d }} stood in" in (err.hint or "")


def test_rendered_values_are_judged_by_the_agent_with_the_host_named(tmp_path: Path):
    playbook = load(
        tmp_path, MINIMAL + "container:\n  user: '{{ uid }}'\n  env_file: '{{ etc }}/m.env'\n"
    )
    with pytest.raises(ConfigError) as info:
        state(playbook, {"uid": "root", "etc": "/etc/mlfleet"})
    err = info.value
    assert err.where == f"{tmp_path / 'p.yml'}:6" and "host edge01" in err.message
    assert "`container.user`" in err.message and "is root" in err.message
    assert err.hint == "check uid in the inventory for edge01"
    with pytest.raises(ConfigError) as info:
        state(playbook, {"uid": "10001", "etc": "etc"})
    assert info.value.where == f"{tmp_path / 'p.yml'}:7"
    assert "`container.env_file`" in info.value.message
    with pytest.raises(ConfigError) as info:
        state(playbook, {"uid": "10001", "etc": "/root"})
    assert info.value.message == (
        "host edge01: `container.env_file`: '/root/m.env' is under /root, a sensitive host path;"
        " keep env files in /etc/mlfleet/ or outside the sensitive paths (or name /root/m.env in"
        " container.allow_mounts)"
    )
    assert info.value.hint == "check etc in the inventory for edge01"
    assert state(playbook, {"uid": "10001", "etc": "/etc/mlfleet"})["container"]["user"] == "10001"


def test_a_variant_without_its_own_image_points_at_image(tmp_path: Path):
    playbook = load(tmp_path, MINIMAL)
    assert playbook.locate(("variants", 0, "image")) == ("image", f"{tmp_path / 'p.yml'}:2")
    assert playbook.locate(("tag",)) == ("tag", str(tmp_path / "p.yml"))
    assert playbook.locate(("health", "timing", "retries")) == (
        "health.retries", str(tmp_path / "p.yml"),
    )  # fmt: skip


def test_rollout_batch_as_command_line_text(tmp_path: Path):
    playbook = load(tmp_path, MINIMAL + "rollout: {batch: '1,5,20%'}\n")
    assert playbook.rollout.batch == [1, 5, "20%"]
