"""Playbooks: one YAML file per model, checked when it is loaded (every mistake is reported
with its file:line) and turned, host by host, into the agent's desired state.

Loading is pure apart from reading the file; `Playbook.desired_state` is pure. A host's
variables (from the inventory) fill in `{{ name }}` templates; nothing else of Jinja exists.

Keys (the function that reads each one is named in brackets; `check.` is
controller/yamlcheck.py, the typed readers shared by every key). The rules for the values
are the agent's: `Playbook.check` builds the desired state at load time (each templated value
stood in for) and `DesiredState.from_dict` (agent/desired.py) judges it; its error's key
path is mapped back to the key's file:line here.

- `app`, required: 1-41 lowercase letters, digits and dashes; names the containers
  and the releases on the host.
- `image` [`_image_template`]: the image *repository*, without a tag, e.g.
  `"{{ mlfleet_registry }}/team/model"`; templated. Required unless every variant has its
  own `image`.
- `tag_template` [`_tag_template`], default `"{tag}-{variant}"`: how the image tag is made
  from the deployed tag (`--tag`) and the variant's name. Only `{tag}` (required) and
  `{variant}`; the rest must be legal in a Docker tag.
- `variants` [`_variants`], required: the agent's variant keys (see agent/variants.py),
  checked by the agent's own `parse_variants`; first match wins on a host, so list the CPU
  fallback last. A variant's optional `image` is a full reference template that replaces
  `image` + `tag_template` for it: host variables, `{tag}` and `{variant}`, and a tag or
  digest, e.g. `"{{ mlfleet_registry }}/team/model-jetson:{tag}"`.
- `container` [`_container`]:
  - `ports` [`_port`]: a list of `"host:container"`, `"host_ip:host:container"`, each with an
    optional `/tcp` or `/udp` (quote them: YAML reads `22:22` as a number), or mappings
    `{host, container, protocol, host_ip}` (`host` and `container` required).
  - `env` [`_env`]: NAME: value; values templated. Quote `"true"`, `"yes"` and friends.
  - `env_file` [`_path_template`]: a KEY=value file *on the host* (secrets): the agent reads
    it when it starts the container; the controller never reads or sends its values.
  - `mounts` [`_mount`]: `"source:target[:ro|rw]"` (read-only unless `rw`) or mappings
    `{source, target, read_only}`; templated; absolute paths.
  - `user` [`_user`]: `"uid[:gid]"` or a name; templated. Root (`root`, or a uid that is
    0 in any spelling: `0`, `00`, `000:1000`) only with `allow_root: true`
    [`check.boolean`], default false.
  - `memory`, `shm_size` [`check.size_mib`]: `512m`, `1.5g`, `2048k` (whole MiB) or a plain
    number of MiB.
  - `cpus` [`check.real`]: a number above 0.
  - `command` [`_command`]: a list of arguments (exec form, never a shell); templated.

  Every container is hardened by default (agent/hardening.py: all capabilities dropped, a
  read-only root filesystem with a tmpfs for /tmp, at most 1024 processes and threads,
  no-new-privileges); these keys relax or change that, and `mlfleet plan` lists what a
  playbook relaxes (`hardening_lines`):
  - `cap_add` [`_capabilities`]: the capabilities the model needs back, Docker's names
    (`NET_BIND_SERVICE`; `CAP_NET_BIND_SERVICE` and lowercase are read too); not `ALL`.
  - `read_only` [`check.boolean`], default true: false makes the root filesystem writable
    (and drops the /tmp tmpfs: /tmp is the image's).
  - `writable` [`_paths`]: container paths that get an empty tmpfs (in memory, counted in
    the memory limit), e.g. `[/var/cache/model]`; not `/`, /proc, /sys, /dev or a mount's
    target.
  - `pids_limit` [`check.integer`], default 1024: processes and threads, 1-4194304.
  - `bind` [`_bind`]: the address ports are published on when their own `host_ip` does
    not say, e.g. `127.0.0.1`; default every address (0.0.0.0 and ::).
  - `allow_mounts` [`_paths`]: sensitive host paths a mount (or the env file) may use, each
    named exactly (`[/etc/ssl/certs]`). Refused unless named: `/`, /etc, /proc, /sys,
    /dev, /boot, /root, /run and /var/run (the Docker socket), /var/lib/docker, the agent's
    directory, and `/usr`, `/lib`, `/var`, `/home` themselves; each path after normalising
    (`/etc/../etc`, `//etc`, `/etc/`) and, on the host, after following links.
  - `env_file` must be outside those paths too, except under /etc/mlfleet/ (its home); the
    agent reads it only when root or the agent's own user owns it and nobody else can write
    it.
- `health` [`_health`]:
  - `docker` [`check.boolean`], default true: wait for the image's own HEALTHCHECK.
  - `http` [`_http_check`]: `{port, path (default /health), status (default 200),
    body_contains}`.
  - `tcp` [`_tcp_check`]: `{port}`.
  - `exec` [`_exec_check`]: `{command: [argv...]}` run in the container.
  - `inference` [`_inference_check`]: `{port, path, request, expect, tolerance}`: POST
    `request` as JSON; the answer must contain `expect`, numbers within `tolerance`
    (default 1e-6). Checked ports must be published by `container.ports`.
  - `start_period` (may be 0), `interval`, `timeout`, `deadline` [`check.duration`]: `"500ms"`,
    `"5s"`, `"2m"`, `"1h"`, `"1m30s"` or a number of seconds. `retries` [`check.integer`]: >= 1.
- `monitor` [`check.duration`]: watch window after the release first turns healthy (agent
  default 10s).
- `retain` [`check.integer`]: releases kept on a host, current and previous included; >= 2.
- `grace` [`check.duration`]: the agent's cron tick rolls back a release that crashes, or
  fails its checks on two ticks in a row, within this long (agent default 10m).
- `strategy`: `auto` (stop-first when old and new bind the same host port),
  `stop-first` or `start-first`.
- `rollout` [`_rollout`]: read by the controller's rollout planner, never sent to a host:
  - `canary` [`rollout.parse_canary`], default 1: hosts updated alone first (0: none), or
    `per-variant`: one host of each variant the plan selects (from the hosts' stored facts),
    so a release that breaks on one class of hardware stops in the canary.
  - `batch` [`rollout.parse_batch`], default `"25%"`: the batch size after the canary: a
    number of hosts, `"N%"` (above 0, at most 100; `"12.5%"` too) of the hosts after the
    canary, or a list such as `[1, 5, "20%"]` whose last entry repeats (Ansible `serial`).
  - `max_fail` [`rollout.parse_budget`], default 0: failures a wave may have; the action fires
    when failures strictly exceed it (`"N%"`, 0-100, `"33.3%"` too, of the wave).
  - `on_failure` [`check.choice`], default `pause`: `pause`, `rollback` or `continue`.

Host variables: `{{ name }}` is replaced by `str(value)` of the host's variable `name`
(`inventory_hostname` is the host's name unless the inventory sets it). An undefined
variable is a ConfigError naming the host, the key, the variable and the file:line.
Templated values are checked again once rendered (image references well-formed, no
whitespace or shell metacharacters), and the complete result is validated by the agent's
`DesiredState.from_dict` before it leaves the controller: an error names the host, the key's
file:line and the host variables the value used.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from mlfleet.agent import hardening
from mlfleet.agent.desired import (
    SCHEMA,
    DesiredState,
    DesiredStateError,
    KeyPath,
    dotted,
    host_ip_problem,
)
from mlfleet.agent.imageref import ImageRef, ImageRefError, is_tag
from mlfleet.agent.variants import Variant, VariantError, parse_variants
from mlfleet.controller import rollout
from mlfleet.controller import yamlcheck as check
from mlfleet.controller.ansible_vault import KEYRING, RevealedVars
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.rollout import BatchSpec, Canary
from mlfleet.controller.templating import TemplateUnsupported, evaluate, is_template
from mlfleet.controller.yamlsource import LocatedDict, LocatedList, load_yaml_file, plain

ON_FAILURE = ("pause", "rollback", "continue")
DEFAULT_TAG_TEMPLATE = "{tag}-{variant}"

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_VAR_OR_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\{(tag|variant)\}")
_PLACEHOLDER = re.compile(r"\{(tag|variant)\}")
_JINJA = ("{{", "{%", "{#")
# Images and paths travel in JSON, never through a shell; refuse what would be dangerous
# in one anyway, since a rendered value may come from an inventory someone else edits.

# Matched whole (re.fullmatch: `$` would let a trailing newline through), ASCII digits only.
_PORT = re.compile(
    r"(?:(?P<ip>[0-9]{1,3}(?:\.[0-9]{1,3}){3}):)?(?P<host>[0-9]+):(?P<container>[0-9]+)"
    r"(?:/(?P<proto>[A-Za-z0-9_]+))?",
    re.ASCII,
)
# Where a desired-state key is called something else in a playbook.
_YAML_NAMES = {
    "monitor_s": "monitor", "grace_s": "grace", "memory_mib": "memory", "shm_mib": "shm_size",
}  # fmt: skip

_TOP_KEYS = (
    "app", "image", "tag_template", "variants", "container", "health", "monitor", "retain",
    "grace", "strategy", "rollout",
)  # fmt: skip
_CONTAINER_KEYS = (
    "ports", "env", "env_file", "mounts", "user", "allow_root", "memory", "cpus", "shm_size",
    "command", "cap_add", "read_only", "writable", "pids_limit", "bind", "allow_mounts",
)  # fmt: skip
_HEALTH_KEYS = (
    "docker", "http", "tcp", "exec", "inference", "start_period", "interval", "timeout",
    "retries", "deadline",
)  # fmt: skip
_ROLLOUT_KEYS = ("canary", "batch", "max_fail", "on_failure")

BatchSize = Union[int, str]


# --------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class RolloutPolicy:
    """How the controller walks the fleet (never sent to a host).

    The default is one canary host, then batches of a quarter of the fleet, halting at the
    first failure: safer than Ansible's all-at-once default for models that may not fit a
    host they have never run on.
    """

    canary: Canary = 1
    batch: BatchSpec = "25%"
    max_fail: BatchSize = 0
    on_failure: str = "pause"


@dataclass(frozen=True)
class Template:
    """A playbook string that may use `{{ name }}` host variables (and, in a variant's
    image, `{tag}` and `{variant}`); it knows its key path and file:line for messages."""

    text: str
    path: str  # e.g. container.mounts[0]
    where: str  # file:line
    placeholders: bool = False  # substitute {tag} and {variant} too
    # What each variable stands for when the playbook is checked at load time, before any
    # host's value is known: a value the agent accepts there ("/1" in a path).
    stand_in: str = "1"

    @property
    def variables(self) -> List[str]:
        """The host variables used, in order of first use."""
        return list(dict.fromkeys(_VAR.findall(self.text)))

    def render(
        self,
        host_vars: Dict[str, Any],
        host_name: str,
        tag: Optional[str] = None,
        variant: Optional[str] = None,
    ) -> str:
        """The text for one host; an undefined variable is a ConfigError."""

        def substitute(match: re.Match) -> str:
            placeholder = match.group(2)
            if placeholder is None:
                return _host_value(host_vars, host_name, match.group(1), self)
            if not self.placeholders:
                return match.group(0)  # `{tag}` is plain text outside image templates
            return (tag if placeholder == "tag" else variant) or ""

        return _VAR_OR_PLACEHOLDER.sub(substitute, self.text)

    def shape(self) -> str:
        """The text with every variable and placeholder replaced by `0`: a stand-in that
        is legal in every part of an image reference, to check the rest at load time."""
        return self._pattern().sub("0", self.text)

    def stand_in_text(self) -> str:
        """The text with each variable replaced by `stand_in`, to check the rest at load."""
        return _VAR.sub(self.stand_in, self.text)

    def literal_parts(self) -> str:
        """The text without its variables and placeholders."""
        return self._pattern().sub("", self.text)

    def _pattern(self) -> re.Pattern:
        return _VAR_OR_PLACEHOLDER if self.placeholders else _VAR

    def failed(self, host_name: str, value: str, problem: str) -> ConfigError:
        """The error for a rendered value that is not acceptable."""
        used = self.variables
        hint = (
            f"check {', '.join(used)} in the inventory for {host_name}"
            if used
            else "fix the playbook"
        )
        return ConfigError(
            f"host {host_name}: `{self.path}` is {value!r} here: {problem}",
            where=self.where,
            hint=hint,
        )


@dataclass
class VariantImage:
    """One variant: its agent keys (plain data, without `image`) and its image override."""

    name: str
    spec: Dict[str, Any]
    image: Optional[Template] = None


@dataclass
class MountTemplate:
    source: Template
    target: Template
    read_only: bool = True


@dataclass
class ContainerTemplate:
    """`container:` as loaded; `render` gives the agent's `container` section for a host."""

    ports: List[Dict[str, Any]] = field(default_factory=list)
    env: Dict[str, Template] = field(default_factory=dict)
    env_file: Optional[Template] = None
    mounts: List[MountTemplate] = field(default_factory=list)
    user: Optional[Template] = None
    allow_root: bool = False
    memory_mib: Optional[int] = None
    cpus: Optional[float] = None
    shm_mib: Optional[int] = None
    command: Optional[List[Template]] = None
    # Hardening: None and empty lists leave the agent's hardened defaults.
    cap_add: List[str] = field(default_factory=list)
    read_only: Optional[bool] = None
    writable: List[str] = field(default_factory=list)
    pids_limit: Optional[int] = None
    bind: Optional[str] = None  # host_ip of the ports that name none
    allow_mounts: List[str] = field(default_factory=list)

    def render(
        self, fill: Callable[[Template], str], host_name: Optional[str] = None
    ) -> Dict[str, Any]:
        """The agent's ContainerSpec dict, each template filled in by `fill`. With `host_name`
        (values rendered for that host) rendered paths are checked for shell metacharacters;
        the agent's validation judges the rest."""

        def path(t: Template) -> str:
            value = fill(t)
            problem = _unsafe_problem(value) if host_name is not None else None
            if problem:
                raise t.failed(str(host_name), value, problem)
            return value

        out: Dict[str, Any] = {"ports": copy.deepcopy(self.ports)}
        if self.bind is not None:
            for port in out["ports"]:
                port["host_ip"] = port["host_ip"] or self.bind
        out["env"] = {key: fill(t) for key, t in self.env.items()}
        if self.env_file is not None:
            out["env_file"] = path(self.env_file)
        out["mounts"] = [
            {"source": path(m.source), "target": path(m.target), "read_only": m.read_only}
            for m in self.mounts
        ]
        if self.user is not None:
            out["user"] = fill(self.user)
        out["allow_root"] = self.allow_root
        for key in ("memory_mib", "cpus", "shm_mib"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.command is not None:
            out["command"] = [fill(t) for t in self.command]
        for key in ("cap_add", "writable", "allow_mounts"):
            if getattr(self, key):
                out[key] = list(getattr(self, key))
        for key in ("read_only", "pids_limit"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def templates(self) -> List[Template]:
        """Every templated value, for the hints of errors."""
        out = [*self.env.values(), *(t for m in self.mounts for t in (m.source, m.target))]
        out += [t for t in (self.env_file, self.user) if t is not None]
        return out + list(self.command or [])


@dataclass
class Playbook:
    """A loaded, validated playbook: everything but the host variables is decided."""

    source: str
    app: str
    rollout: RolloutPolicy
    repository: Optional[Template] = None
    tag_template: str = DEFAULT_TAG_TEMPLATE
    variants: List[VariantImage] = field(default_factory=list)
    container: ContainerTemplate = field(default_factory=ContainerTemplate)
    health: Dict[str, Any] = field(default_factory=dict)  # final: nothing in it is templated
    # monitor_s, retain, grace_s, strategy, where the playbook sets them (else agent defaults)
    settings: Dict[str, Any] = field(default_factory=dict)
    # The YAML as loaded, with its lines: where an error of the agent's validation points.
    document: Optional[LocatedDict] = field(default=None, repr=False, compare=False)

    def variant_names(self) -> List[str]:
        """The variants, in the playbook's (preference) order."""
        return [v.name for v in self.variants]

    def images(self, host_vars: Dict[str, Any], host_name: str, tag: str) -> Dict[str, str]:
        """Variant name -> the full image reference this host would pull for `tag`."""
        _check_tag(tag)
        repository: Optional[str] = None
        out: Dict[str, str] = {}
        for v in self.variants:
            if v.image is not None:
                ref = v.image.render(host_vars, host_name, tag=tag, variant=v.name)
                problem = _reference_problem(ref)
                if problem:
                    raise v.image.failed(host_name, ref, problem)
                out[v.name] = ref
                continue
            if repository is None:
                assert self.repository is not None  # load time: image or every override
                repository = self.repository.render(host_vars, host_name)
                problem = _repository_problem(repository)
                if problem:
                    raise self.repository.failed(host_name, repository, problem)
            image_tag = self.tag_template.replace("{tag}", tag).replace("{variant}", v.name)
            if not is_tag(image_tag):
                raise ConfigError(
                    f"tag {tag!r} with variant {v.name} makes the image tag {image_tag!r},"
                    " longer than Docker's 128 characters",
                    where=self.source,
                    hint="use a shorter tag or tag_template",
                )
            out[v.name] = f"{repository}:{image_tag}"
        return out

    def desired_state(
        self, host_vars: Dict[str, Any], host_name: str, tag: str, deployment: str
    ) -> DesiredState:
        """The agent's desired state (schema `SCHEMA`) for one host, validated with
        `DesiredState.from_dict`; templating and validation errors are ConfigErrors naming
        the host and the playbook's file:line."""
        images = self.images(host_vars, host_name, tag)

        def fill(t: Template) -> str:
            return t.render(host_vars, host_name)

        state = self._state(self.container.render(fill, host_name), images, tag, deployment)
        try:
            return DesiredState.from_dict(state)
        except DesiredStateError as exc:
            path, where = self.locate(exc.path)
            used = _variables(t for t in self._templates() if _under(t.path, path))
            raise ConfigError(
                f"host {host_name}: `{path}`: {exc.problem}",
                where=where,
                hint=f"check {', '.join(used)} in the inventory for {host_name}" if used else None,
            ) from None

    def check(self) -> None:
        """Validate the playbook with the agent's rules before any host is known: templated
        values are stood in for (`Template.stand_in`) and judged again once rendered. An error
        is a ConfigError naming the file:line of the bad key."""
        images: Dict[str, str] = {}
        for v in self.variants:
            if v.image is not None:
                images[v.name] = v.image.shape()
            else:
                assert self.repository is not None  # load time: image or every override
                image_tag = self.tag_template.replace("{tag}", "0").replace("{variant}", v.name)
                images[v.name] = f"{self.repository.shape()}:{image_tag}"
        container = self.container.render(Template.stand_in_text)
        try:
            DesiredState.from_dict(self._state(container, images, "0", "check"))
        except DesiredStateError as exc:
            path, where = self.locate(exc.path)
            stood_in = [t for t in self._templates() if _under(t.path, path) and t.variables]
            hint = None
            if stood_in:
                hint = (
                    f"checked with {', '.join(f'{{{{ {n} }}}}' for n in _variables(stood_in))}"
                    f" stood in by {stood_in[0].stand_in!r}; no host's value can make it valid"
                )
            raise check.bad(where, path, exc.problem, hint=hint) from None

    def locate(self, path: KeyPath) -> Tuple[str, str]:
        """A desired-state key path as the playbook's key path and its file:line: as deep as
        the YAML goes (`container.ports[0]` for a port written as a string)."""
        keys = self._yaml_keys(path)
        node: Any = self.document
        where, walked = self.source, []
        for key in keys:
            in_dict = isinstance(node, LocatedDict) and key in node
            in_list = isinstance(node, LocatedList) and isinstance(key, int) and key < len(node)
            if not (in_dict or in_list):
                break
            where, node = node.where(key), node[key]
            walked.append(key)
        return dotted(tuple(walked) or keys), where

    def _yaml_keys(self, path: KeyPath) -> KeyPath:
        keys = list(path)
        if keys[:1] == ["variants"] and len(keys) > 2 and keys[2] == "image":
            index = keys[1]
            known = isinstance(index, int) and index < len(self.variants)
            if known and self.variants[int(index)].image is None:
                return ("image",)  # the variant's image is `image` + `tag_template`
        if keys[:2] == ["health", "timing"]:
            keys = ["health", *keys[2:]]
            keys[1:] = [k[:-2] if isinstance(k, str) and k.endswith("_s") else k for k in keys[1:]]
        return tuple(_YAML_NAMES.get(k, k) if isinstance(k, str) else k for k in keys)

    def _state(
        self, container: Dict[str, Any], images: Dict[str, str], tag: str, deployment: str
    ) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "app": self.app,
            "deployment": deployment,
            "tag": tag,
            "variants": [dict(copy.deepcopy(v.spec), image=images[v.name]) for v in self.variants],
            "container": container,
            "health": copy.deepcopy(self.health),
            **self.settings,
        }

    def _templates(self) -> List[Template]:
        out = [self.repository] if self.repository is not None else []
        out += [v.image for v in self.variants if v.image is not None]
        return out + self.container.templates()


def hardening_lines(playbook: Playbook) -> List[str]:
    """What the playbook relaxes of the hardened defaults (agent/hardening.py), one plain
    line each, for `mlfleet plan` to show before anything runs; empty when it keeps them
    all. Ports published on every address are listed too (the default, and worth seeing)."""
    c = playbook.container
    lines: List[str] = []
    if c.cap_add:
        lines.append(f"capabilities: {', '.join(c.cap_add)} added (all others dropped)")
    if c.read_only is False:
        lines.append("root filesystem writable (read_only: false)")
    if c.pids_limit is not None and c.pids_limit > hardening.DEFAULT_PIDS_LIMIT:
        lines.append(
            f"pids limit raised to {c.pids_limit} (default {hardening.DEFAULT_PIDS_LIMIT})"
        )
    if c.allow_root:
        lines.append("may run as root (allow_root: true)")
    if c.allow_mounts:
        lines.append(f"sensitive host paths allowed: {', '.join(c.allow_mounts)} (allow_mounts)")
    writable_mounts = [m.source.text for m in c.mounts if not m.read_only]
    if writable_mounts:
        lines.append(f"host paths mounted read-write: {', '.join(writable_mounts)}")
    everywhere = [
        f"{p['host']}/{p['protocol']}"
        for p in c.ports
        if (p["host_ip"] or c.bind or "") in ("", "0.0.0.0", "::")
    ]
    if everywhere:
        lines.append(
            f"ports published on every address (0.0.0.0 and ::): {', '.join(everywhere)};"
            " container.bind: 127.0.0.1 narrows them"
        )
    return lines


def _under(path: str, prefix: str) -> bool:
    """Whether key path `path` is `prefix` or inside it."""
    return path == prefix or path.startswith((f"{prefix}.", f"{prefix}["))


def _variables(templates: Any) -> List[str]:
    return list(dict.fromkeys(name for t in templates for name in t.variables))


# --------------------------------------------------------------------------- entry points


def load_playbook(path: Path) -> Playbook:
    """Read and validate a playbook; any mistake is a ConfigError naming file:line."""
    path = Path(path)
    data = load_yaml_file(path)
    source = str(path)
    if data is None:
        raise ConfigError("the playbook is empty", where=source, hint="see playbooks/*.yml")
    if not isinstance(data, LocatedDict):
        raise ConfigError(
            f"expected a mapping of settings (app:, image:, ...), got {check.kind(data)}",
            where=f"{source}:1",
        )
    return _playbook(data, source)


def find_playbook(directory: Path) -> Path:
    """The one playbook (*.yml, *.yaml) in `directory`/playbooks, or in `directory` itself
    when it has no playbooks/ folder; none or several is a ConfigError."""
    directory = Path(directory)
    folder = directory / "playbooks" if (directory / "playbooks").is_dir() else directory
    if not folder.is_dir():
        raise ConfigError(
            "no playbooks directory", where=str(folder), hint="use -p FILE to name a playbook"
        )
    found = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".yml", ".yaml") and p.is_file() and not p.name.startswith(".")
    )
    if not found:
        raise ConfigError("no playbook (*.yml, *.yaml) here", where=str(folder), hint="use -p FILE")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(
            f"several playbooks: {names}", where=str(folder), hint="use -p FILE to choose one"
        )
    return found[0]


# --------------------------------------------------------------------------- the sections


def _playbook(data: LocatedDict, source: str) -> Playbook:
    check.known_keys(data, "", _TOP_KEYS, required=("app", "variants"))
    variants = _variants(data["variants"], data.where("variants"))
    repository = None
    if data.get("image") is not None:
        repository = _image_template(data["image"], data.where("image"), "image")
    else:
        missing = [v.name for v in variants if v.image is None]
        if missing:
            raise ConfigError(
                f"`image` is required: variants {', '.join(missing)} have no `image` of their own",
                where=data.where(),
                hint='set image: "registry/team/model" (the repository, without a tag)',
            )
    tag_template = DEFAULT_TAG_TEMPLATE
    if data.get("tag_template") is not None:
        tag_template = _tag_template(data["tag_template"], data.where("tag_template"))
    container = ContainerTemplate()
    if data.get("container") is not None:
        container = _container(data["container"], data.where("container"))
    health: Dict[str, Any] = {}
    if data.get("health") is not None:
        health = _health(data["health"], data.where("health"))
    # The values' rules are the agent's (DesiredState, run by Playbook.check): read only here.
    settings: Dict[str, Any] = {}
    if data.get("monitor") is not None:
        settings["monitor_s"] = check.duration(data["monitor"], data.where("monitor"), "monitor")
    if data.get("retain") is not None:
        settings["retain"] = check.integer(data["retain"], data.where("retain"), "retain")
    if data.get("grace") is not None:
        settings["grace_s"] = check.duration(data["grace"], data.where("grace"), "grace")
    if data.get("strategy") is not None:
        settings["strategy"] = data["strategy"]
    policy = RolloutPolicy()
    if data.get("rollout") is not None:
        policy = _rollout(data["rollout"], data.where("rollout"))
    playbook = Playbook(
        source=source,
        app=data["app"],
        rollout=policy,
        repository=repository,
        tag_template=tag_template,
        variants=variants,
        container=container,
        health=health,
        settings=settings,
        document=data,
    )
    playbook.check()
    return playbook


def _image_template(value: Any, where: str, path: str) -> Template:
    """`image`: the repository, templated; checked with variables stood in by `0`."""
    template = _template(value, where, path)
    problem = _repository_problem(template.shape())
    if problem:
        raise check.bad(where, path, f"{value!r} {problem}")
    return template


def _tag_template(value: Any, where: str) -> str:
    """`tag_template`: `{tag}` (required) and `{variant}`, otherwise Docker tag characters."""
    text = check.string(value, where, "tag_template")
    rest = _PLACEHOLDER.sub("", text)
    if "{tag}" not in text:
        raise check.bad(where, "tag_template", f"{text!r} must contain {{tag}}")
    if "{" in rest or "}" in rest:
        raise check.bad(
            where, "tag_template", f"{text!r}: only {{tag}} and {{variant}} may be used"
        )
    if not is_tag(_PLACEHOLDER.sub("x", text)):
        raise check.bad(
            where, "tag_template", f"{text!r}: a Docker tag has only letters, digits, _ . -"
        )
    return text


def _variants(value: Any, where: str) -> List[VariantImage]:
    """`variants`: each item by the agent's `Variant.from_dict`, the list by its
    `parse_variants` (duplicates); errors carry the line of the item."""
    if not isinstance(value, LocatedList):
        raise check.bad(where, "variants", f"expected a list of mappings, got {check.kind(value)}")
    for index, item in enumerate(value):
        try:
            Variant.from_dict(item, index)
        except VariantError as exc:
            raise ConfigError(str(exc), where=value.where(index)) from None
    try:
        parsed = parse_variants(value)
    except VariantError as exc:
        match = re.match(r"variants\[(\d+)\]", str(exc))
        line = value.where(int(match.group(1))) if match else value.where()
        raise ConfigError(str(exc), where=line) from None
    out: List[VariantImage] = []
    for index, (item, variant) in enumerate(zip(value, parsed)):
        image = None
        if item.get("image") is not None:
            path = f"variants[{index}].image"
            image = _template(item["image"], item.where("image"), path, placeholders=True)
            problem = _reference_problem(image.shape())
            if problem:
                raise check.bad(item.where("image"), path, f"{item['image']!r} {problem}")
        spec = {k: plain(v) for k, v in item.items() if k != "image"}
        out.append(VariantImage(name=variant.name, spec=spec, image=image))
    return out


def _container(value: Any, where: str) -> ContainerTemplate:
    """`container`: ports, env, env_file, mounts, user, allow_root, resources, command, and
    the hardening keys (cap_add, read_only, writable, pids_limit, bind, allow_mounts)."""
    m = check.known_keys(check.mapping(value, where, "container"), "container", _CONTAINER_KEYS)
    spec = ContainerTemplate()
    if m.get("ports") is not None:
        ports = check.sequence(m["ports"], m.where("ports"), "container.ports")
        spec.ports = [
            _port(p, ports.where(i), f"container.ports[{i}]") for i, p in enumerate(ports)
        ]
    if m.get("env") is not None:
        spec.env = _env(m["env"], m.where("env"))
    if m.get("env_file") is not None:
        spec.env_file = _path_template(m["env_file"], m.where("env_file"), "container.env_file")
    if m.get("mounts") is not None:
        mounts = check.sequence(m["mounts"], m.where("mounts"), "container.mounts")
        spec.mounts = [
            _mount(item, mounts.where(i), f"container.mounts[{i}]") for i, item in enumerate(mounts)
        ]
    if m.get("allow_root") is not None:
        spec.allow_root = check.boolean(
            m["allow_root"], m.where("allow_root"), "container.allow_root"
        )
    if m.get("user") is not None:
        spec.user = _user(m["user"], m.where("user"))
    if m.get("memory") is not None:
        spec.memory_mib = check.size_mib(m["memory"], m.where("memory"), "container.memory")
    if m.get("cpus") is not None:
        spec.cpus = check.real(m["cpus"], m.where("cpus"), "container.cpus")
    if m.get("shm_size") is not None:
        spec.shm_mib = check.size_mib(m["shm_size"], m.where("shm_size"), "container.shm_size")
    if m.get("command") is not None:
        spec.command = _command(m["command"], m.where("command"), "container.command", True)
    if m.get("cap_add") is not None:
        spec.cap_add = _capabilities(m["cap_add"], m.where("cap_add"))
    if m.get("read_only") is not None:
        spec.read_only = check.boolean(m["read_only"], m.where("read_only"), "container.read_only")
    if m.get("writable") is not None:
        spec.writable = _paths(m["writable"], m.where("writable"), "container.writable")
    if m.get("pids_limit") is not None:
        spec.pids_limit = check.integer(
            m["pids_limit"], m.where("pids_limit"), "container.pids_limit"
        )
    if m.get("bind") is not None:
        spec.bind = _bind(m["bind"], m.where("bind"))
    if m.get("allow_mounts") is not None:
        spec.allow_mounts = _paths(
            m["allow_mounts"], m.where("allow_mounts"), "container.allow_mounts"
        )
    return spec


def _capabilities(value: Any, where: str) -> List[str]:
    """`cap_add`: capability names as Docker writes them (`NET_BIND_SERVICE`); the `CAP_`
    prefix and lowercase are read too. Which names exist is the agent's rule."""
    items = check.sequence(value, where, "container.cap_add", hint="e.g. [NET_BIND_SERVICE]")
    out: List[str] = []
    for i, item in enumerate(items):
        name = check.string(item, items.where(i), f"container.cap_add[{i}]").upper()
        out.append(name[len("CAP_") :] if name.startswith("CAP_") else name)
    return out


def _paths(value: Any, where: str, path: str) -> List[str]:
    """A list of paths, written out (not templated): the agent judges them (absolute,
    normalised, where they may be)."""
    items = check.sequence(value, where, path, hint="e.g. [/var/cache/model]")
    return [check.string(item, items.where(i), f"{path}[{i}]") for i, item in enumerate(items)]


def _bind(value: Any, where: str) -> str:
    """`bind`: the IP address ports are published on when they name none."""
    text = check.string(value, where, "container.bind")
    problem = host_ip_problem(text)
    if problem:
        raise check.bad(where, "container.bind", f"{text!r} is not an IP address like 127.0.0.1")
    return text


def _port(value: Any, where: str, path: str) -> Dict[str, Any]:
    """A `ports` item: `"[host_ip:]host:container[/tcp|/udp]"` or `{host, container,
    protocol, host_ip}`; the agent's Port dict (ranges, protocol and address are the agent's
    rules)."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise check.bad(
            where,
            path,
            f'expected a quoted "host:container" string; got the number {value}:'
            " unquoted, YAML reads 22:22 as a base-60 number",
            hint='quote port mappings: "8080:8080"',
        )
    if isinstance(value, str):
        match = _PORT.fullmatch(value)
        if not match:
            raise check.bad(
                where, path, f'{value!r} is not "host:container", e.g. "8080:8080" or "53:53/udp"'
            )
        port = {
            "container": int(match.group("container")),
            "host": int(match.group("host")),
            "protocol": match.group("proto") or "tcp",
            "host_ip": match.group("ip") or "",
        }
    elif isinstance(value, LocatedDict):
        m = check.known_keys(value, path, ("host", "container", "protocol", "host_ip"),
                  required=("host", "container"))  # fmt: skip
        port = {
            "container": check.integer(m["container"], m.where("container"), f"{path}.container"),
            "host": check.integer(m["host"], m.where("host"), f"{path}.host"),
            "protocol": m.get("protocol") or "tcp",
            "host_ip": m.get("host_ip") or "",
        }
        if not isinstance(port["host_ip"], str):
            raise check.bad(m.where("host_ip"), f"{path}.host_ip", "expected an IP address string")
    else:
        raise check.bad(
            where, path, f'expected "host:container" or a mapping, got {check.kind(value)}'
        )
    return port


def _env(value: Any, where: str) -> Dict[str, Template]:
    """`env`: NAME: value; names like shell variables, values strings or numbers (templated)."""
    m = check.mapping(value, where, "container.env")
    out: Dict[str, Template] = {}
    for key, item in m.items():
        # dotted() quotes a name that is not a plain word: the message stays one line.
        path, at = dotted(("container", "env", str(key))), m.where(key)
        if isinstance(item, bool) or item is None:
            raise check.bad(
                at,
                path,
                f"{item!r} is not a string",
                hint=f'quote it: {_yaml_key(key)}: "{_yaml_word(item)}"',
            )
        if isinstance(item, (int, float)):
            item = str(item)
        out[key] = _template(item, at, path)
    return out


def _mount(value: Any, where: str, path: str) -> MountTemplate:
    """A `mounts` item: `"source:target[:ro|rw]"` (read-only by default) or `{source, target,
    read_only}`; both paths absolute (checked now if literal, else once rendered)."""
    if isinstance(value, str):
        parts = value.split(":")
        mode_ok = len(parts) == 2 or (len(parts) == 3 and parts[2] in ("ro", "rw"))
        if not mode_ok or not all(parts):
            raise check.bad(
                where,
                path,
                f'{value!r} is not "source:target[:ro|rw]", e.g. "/srv/models:/data:ro"',
            )
        return MountTemplate(
            source=_path_template(parts[0], where, path),
            target=_path_template(parts[1], where, path),
            read_only=len(parts) == 2 or parts[2] == "ro",
        )
    if isinstance(value, LocatedDict):
        m = check.known_keys(
            value, path, ("source", "target", "read_only"), required=("source", "target")
        )
        read_only = True
        if m.get("read_only") is not None:
            read_only = check.boolean(m["read_only"], m.where("read_only"), f"{path}.read_only")
        return MountTemplate(
            source=_path_template(m["source"], m.where("source"), f"{path}.source"),
            target=_path_template(m["target"], m.where("target"), f"{path}.target"),
            read_only=read_only,
        )
    raise check.bad(
        where, path, f'expected "source:target[:ro|rw]" or a mapping, got {check.kind(value)}'
    )


def _path_template(value: Any, where: str, path: str) -> Template:
    """A host or container path, templated: no whitespace or shell metacharacters (checked
    now in what is written, again once rendered); absolute (the agent's rule)."""
    template = _template(value, where, path, stand_in="/1")
    problem = _unsafe_problem(template.literal_parts())
    if problem:
        raise check.bad(where, path, f"{value!r} {problem}")
    return template


def _user(value: Any, where: str) -> Template:
    """`user`: `"uid[:gid]"` or a name, templated (root only with `allow_root: true`: the
    agent's rule)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _template(value, where, "container.user")


def _command(value: Any, where: str, path: str, templated: bool) -> List[Any]:
    """A command: a list of arguments (strings or numbers), exec form (not empty: the
    agent's rule)."""
    items = check.sequence(
        value, where, path, hint='write it as a list: [python3, "/app/server.py"]'
    )
    out: List[Any] = []
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise check.bad(
                items.where(i), f"{path}[{i}]", f"expected a string, got {check.kind(item)}"
            )
        text = str(item)
        out.append(_template(text, items.where(i), f"{path}[{i}]") if templated else text)
    return out


def _health(value: Any, where: str) -> Dict[str, Any]:
    """`health`: the agent's HealthSpec dict (checks and timing); nothing is templated."""
    m = check.known_keys(check.mapping(value, where, "health"), "health", _HEALTH_KEYS)
    out: Dict[str, Any] = {}
    if m.get("docker") is not None:
        out["docker"] = check.boolean(m["docker"], m.where("docker"), "health.docker")
    checks = {
        "http": _http_check,
        "tcp": _tcp_check,
        "exec": _exec_check,
        "inference": _inference_check,
    }
    for key, parse in checks.items():
        if m.get(key) is not None:
            items = check.sequence(m[key], m.where(key), f"health.{key}")
            out[key] = [parse(x, items.where(i), f"health.{key}[{i}]") for i, x in enumerate(items)]
    timing: Dict[str, Any] = {}
    for key in ("start_period", "interval", "timeout", "deadline"):
        if m.get(key) is not None:
            timing[f"{key}_s"] = check.duration(m[key], m.where(key), f"health.{key}")
    if m.get("retries") is not None:
        timing["retries"] = check.integer(m["retries"], m.where("retries"), "health.retries")
    if timing:
        out["timing"] = timing
    return out


def _http_check(value: Any, where: str, path: str) -> Dict[str, Any]:
    """`health.http` item: `{port, path (default /health), status (default 200), body_contains}`."""
    m = check.known_keys(check.mapping(value, where, path), path, ("port", "path", "status", "body_contains"),
              required=("port",))  # fmt: skip
    out: Dict[str, Any] = {"port": check.integer(m["port"], m.where("port"), f"{path}.port")}
    if m.get("path") is not None:
        out["path"] = check.string(m["path"], m.where("path"), f"{path}.path")
    if m.get("status") is not None:
        out["status"] = check.integer(m["status"], m.where("status"), f"{path}.status")
    if m.get("body_contains") is not None:
        out["body_contains"] = check.string(
            m["body_contains"], m.where("body_contains"), f"{path}.body_contains"
        )
    return out


def _tcp_check(value: Any, where: str, path: str) -> Dict[str, Any]:
    """`health.tcp` item: `{port}`."""
    m = check.known_keys(check.mapping(value, where, path), path, ("port",), required=("port",))
    return {"port": check.integer(m["port"], m.where("port"), f"{path}.port")}


def _exec_check(value: Any, where: str, path: str) -> Dict[str, Any]:
    """`health.exec` item: `{command: [argv...]}`, run inside the container."""
    m = check.known_keys(
        check.mapping(value, where, path), path, ("command",), required=("command",)
    )
    return {"command": _command(m["command"], m.where("command"), f"{path}.command", False)}


def _inference_check(value: Any, where: str, path: str) -> Dict[str, Any]:
    """`health.inference` item: `{port, path, request, expect, tolerance (default 1e-6)}`."""
    keys = ("port", "path", "request", "expect", "tolerance")
    m = check.known_keys(check.mapping(value, where, path), path, keys, required=keys[:4])
    out: Dict[str, Any] = {
        "port": check.integer(m["port"], m.where("port"), f"{path}.port"),
        "path": check.string(m["path"], m.where("path"), f"{path}.path"),
        "request": check.json_data(m["request"], m.where("request"), f"{path}.request"),
        "expect": check.json_data(m["expect"], m.where("expect"), f"{path}.expect"),
    }
    if m.get("tolerance") is not None:
        out["tolerance"] = check.real(m["tolerance"], m.where("tolerance"), f"{path}.tolerance")
    return out


def _rollout(value: Any, where: str) -> RolloutPolicy:
    """`rollout`: canary, batch, max_fail, on_failure (see the module docstring). The values
    are read by controller/rollout.py's parsers, the same the command line's options use."""
    m = check.known_keys(check.mapping(value, where, "rollout"), "rollout", _ROLLOUT_KEYS)
    policy: Dict[str, Any] = {}
    if m.get("canary") is not None:
        policy["canary"] = _spec(rollout.parse_canary, m, "canary")
    if m.get("batch") is not None:
        policy["batch"] = _spec(rollout.parse_batch, m, "batch")
    if m.get("max_fail") is not None:
        budget = _spec(rollout.parse_budget, m, "max_fail")
        policy["max_fail"] = budget.count if budget.count is not None else str(budget)
    if m.get("on_failure") is not None:
        policy["on_failure"] = check.choice(
            m["on_failure"], m.where("on_failure"), "rollout.on_failure", ON_FAILURE
        )
    return RolloutPolicy(**policy)


def _spec(parse: Callable[[Any], Any], m: LocatedDict, key: str) -> Any:
    """A rollout value read by its parser; its SpecError gets the key's (or entry's) line."""
    try:
        return parse(m[key])
    except rollout.SpecError as exc:
        node, path, at = m[key], f"rollout.{key}", m.where(key)
        if exc.index is not None and isinstance(node, LocatedList):
            path, at = f"{path}[{exc.index}]", node.where(exc.index)
        raise check.bad(at, path, exc.problem) from None


def _template(
    value: Any, where: str, path: str, placeholders: bool = False, stand_in: str = "1"
) -> Template:
    """A string that may use `{{ name }}` (and `{tag}`, `{variant}` where allowed)."""
    text = check.string(value, where, path)
    template = Template(text, path, where, placeholders, stand_in)
    rest = template.literal_parts()
    if any(marker in rest for marker in _JINJA):
        raise check.bad(
            where,
            path,
            f"{text!r}: only {{{{ name }}}} (a host variable) is supported;"
            " no filters, expressions or other Jinja",
        )
    return template


def _host_value(host_vars: Dict[str, Any], host_name: str, name: str, t: Template) -> str:
    revealed = RevealedVars(host_vars, host_name, KEYRING)  # vault values decrypted when used
    if name in host_vars:
        value = revealed[name]
    elif name == "inventory_hostname":
        return host_name
    else:
        close = difflib.get_close_matches(name, [str(k) for k in host_vars], n=1)
        maybe = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"host {host_name}: `{t.path}` uses {{{{ {name} }}}}, which is not defined for"
            f" this host{maybe}",
            where=t.where,
            hint=f"define {name} in the inventory, in the host's vars or a group's vars",
        )
    if value is None or isinstance(value, (dict, list, tuple, set)):
        raise ConfigError(
            f"host {host_name}: `{t.path}` uses {{{{ {name} }}}}, which is {check.kind(value)}"
            " in the inventory; a template needs a string or a number",
            where=t.where,
            hint=f"set {name} to a value for {host_name}",
        )
    if is_template(value):  # the inventory's value is a template too, as Ansible allows
        try:
            return evaluate(value, revealed, host_name, os.environ)
        except TemplateUnsupported as exc:
            raise ConfigError(
                f"host {host_name}: `{t.path}` uses {{{{ {name} }}}}, a Jinja template mlfleet "
                f"cannot evaluate: {exc}",
                where=t.where,
                hint=f"write {name} out for {host_name}; mlfleet evaluates only "
                "{{ variable }} and {{ lookup('env', 'NAME') }}",
            ) from None
    return str(value)


def _check_tag(tag: str) -> None:
    if not is_tag(tag):
        raise ConfigError(
            f"tag {tag!r} is not a Docker tag",
            hint="1-128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
        )


# --------------------------------------------------------------------------- value checks


def _unsafe_problem(text: str) -> Optional[str]:
    if check.UNSAFE.search(text):
        return "contains whitespace or a shell metacharacter (';', '`', '$(')"
    return None


def _repository_problem(text: str) -> Optional[str]:
    """What is wrong with an image repository (no tag or digest), per agent/imageref.py."""
    unsafe = _unsafe_problem(text)
    if unsafe:
        return unsafe
    try:
        ref = ImageRef.parse(text)
    except ImageRefError as exc:
        return f"is not an image repository like registry:5000/team/model ({exc})"
    if ref.tag is not None or ref.digest is not None:
        return (
            "has a tag or digest; `image` is the repository only (the tag comes from --tag"
            " and tag_template)"
        )
    return None


def _reference_problem(text: str) -> Optional[str]:
    """What is wrong with a full image reference (a tag or a digest required)."""
    unsafe = _unsafe_problem(text)
    if unsafe:
        return unsafe
    try:
        ref = ImageRef.parse(text)
    except ImageRefError as exc:
        return f"is not an image reference like registry:5000/team/model:{{tag}}-gpu ({exc})"
    if ref.tag is None and ref.digest is None:
        return "has no tag or digest; add one, e.g. :{tag}-{variant}"
    return None


# --------------------------------------------------------------------------- small pieces


def _yaml_key(key: Any) -> str:
    """A key as YAML would read it back: plain when it is a word, else double-quoted with
    its control characters escaped (one line)."""
    text = str(key)
    return text if re.fullmatch(r"[A-Za-z0-9_.-]+", text) else json.dumps(text)


def _yaml_word(value: Any) -> str:
    return "" if value is None else str(value).lower()
