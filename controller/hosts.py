"""One inventory host: its merged variables and the typed settings mlfleet reads from them
(connection, jump host, sudo, the agent's paths, image transfer). Every setting is checked
where it is read; a bad value is a ConfigError naming the host, the variable and the
file:line its value came from (pure)."""

from __future__ import annotations

import os
import re
import shlex
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Set, Tuple

from mlfleet.controller.ansible_vault import KEYRING, Keyring, RevealedVars, VaultValue
from mlfleet.controller.errors import ConfigError
from mlfleet.controller.templating import TemplateUnsupported, evaluate, is_template
from mlfleet.controller.yamlsource import shown

TRANSFER_MODES = ("pull", "relay", "auto")
REGISTRY_SCHEMES = ("https", "http")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"

_DIGITS = re.compile(r"[0-9]{1,18}")  # Ansible accepts "2222"; longer is no port or count
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+:[0-9]{1,5}")
# A login name: no `/` (it names the host's crontab file) and no leading `-`.
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*\$?")
MAX_BWLIMIT_KBIT = 100_000_000  # 100 Gbit/s
_TRUE = frozenset({"true", "yes", "on", "y", "t", "1"})
_FALSE = frozenset({"false", "no", "off", "n", "f", "0"})


class UnevaluatedTemplate(ConfigError):
    """A setting holds Jinja that mlfleet does not evaluate: refused for the hosts a command
    touches, not for every host of the inventory."""


@dataclass(frozen=True)
class JumpHost:
    """An SSH jump (bastion) host. `user` None: not given, the SSH layer decides."""

    user: Optional[str]
    address: str
    port: int = 22


@dataclass(frozen=True)
class Host:
    """One inventory host with its merged variables and typed connection settings.

    `groups` lists every group the host is in, `all` first, in the order their variables
    apply. `origins` maps each variable to the file:line its winning value came from.
    A setting's value may use the Jinja that controller/templating.py evaluates (other
    variables of the host, `lookup('env', ...)` from `environ`, the controller's own), and
    may be vault-encrypted (decrypted by `keyring` when read, never kept).
    """

    name: str
    vars: Dict[str, Any] = field(hash=False)
    groups: Tuple[str, ...] = ()
    origins: Dict[str, str] = field(default_factory=dict, hash=False, compare=False, repr=False)
    where: str = ""  # file:line of its first listing
    environ: Mapping[str, str] = field(
        default_factory=lambda: os.environ, hash=False, compare=False, repr=False
    )
    keyring: Keyring = field(default=KEYRING, hash=False, compare=False, repr=False)

    @property
    def address(self) -> str:
        """Where SSH connects: `ansible_host` (or `ansible_ssh_host`), else the name."""
        var, text = self._word("ansible_ssh_host", "ansible_host")
        if var is not None and text.startswith("-"):
            raise self._error(var, "a host name or an address", text)
        if var is None and (any(c.isspace() for c in self.name) or self.name.startswith("-")):
            raise ConfigError(
                f"host {shown(self.name)} has no ansible_host, and its name cannot be an "
                "address to connect to",
                where=self.where or None,
                hint="set ansible_host for it (a name with spaces is often hosts written on "
                "one line: list each under `hosts:` as `name:`)",
            )
        return text or self.name

    @property
    def port(self) -> int:
        """SSH port: `ansible_port` (or `ansible_ssh_port`), default 22."""
        return self._int(("ansible_ssh_port", "ansible_port"), 22, 1, 65535) or 22

    @property
    def user(self) -> str:
        """SSH user: `ansible_user` (or `ansible_ssh_user`), default root."""
        var, text = self._word("ansible_ssh_user", "ansible_user")
        if var is not None and not _USER.fullmatch(text):
            raise self._error(var, "a login name (letters, digits, _ . @ -)", text)
        return text or "root"

    @property
    def ssh_key(self) -> Optional[str]:
        """Private key file (`~` expanded), or None for the SSH agent and default keys."""
        return self._local_path("ansible_ssh_private_key_file", "ansible_private_key_file")

    @property
    def known_hosts(self) -> str:
        """known_hosts file to verify the host key against (`~` expanded)."""
        return self._local_path("mlfleet_known_hosts") or os.path.expanduser(DEFAULT_KNOWN_HOSTS)

    @property
    def jump_host(self) -> Optional[JumpHost]:
        """`mlfleet_jump_host` (`user@host:port`), else a ProxyJump in Ansible's SSH args."""
        var, value = self._get("mlfleet_jump_host")
        if var is None:
            var, value = self._proxy_jump_from_ssh_args()
            if var is None:
                return None
        if not isinstance(value, str):
            raise self._error(var, "a jump host like user@bastion:22", value)
        try:
            return parse_jump_host(value)
        except ValueError as exc:
            raise self._error(
                var, "a jump host like user@bastion:22", value, hint=str(exc)
            ) from None

    @property
    def become(self) -> bool:
        """Use sudo for what needs root when the user is not root (`mlfleet_become`,
        `ansible_become`; default false)."""
        return self._bool("mlfleet_become", "ansible_become")

    def _bool(self, *names: str) -> bool:
        var, value = self._get(*names)
        if var is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        text = value.strip().lower() if isinstance(value, str) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise self._error(var, "true or false", value)

    @property
    def python(self) -> str:
        """The host's Python 3 for the agent: `mlfleet_python`, else a fixed
        `ansible_python_interpreter`, else python3."""
        var, text = self._word("mlfleet_python")
        if var is None:
            var, text = self._word("ansible_python_interpreter")
            if text.startswith("auto"):  # Ansible's interpreter discovery
                var, text = None, ""
        if var is not None and text.startswith("-"):
            raise self._error(var, "a path or command such as /usr/bin/python3", text)
        return text or "python3"

    @property
    def agent_dir(self) -> str:
        """Where the agent and its state live on the host."""
        return self._remote_path("mlfleet_agent_dir") or "/var/lib/mlfleet"

    @property
    def docker_host(self) -> Optional[str]:
        """The host's Docker engine in DOCKER_HOST form, or None for the default socket."""
        var, text = self._word("mlfleet_docker_host")
        if var is None:
            return None
        if "://" not in text:
            raise self._error(
                "mlfleet_docker_host", "a DOCKER_HOST address", text,
                hint="e.g. unix:///var/run/docker.sock or tcp://127.0.0.1:2375",
            )  # fmt: skip
        return text

    @property
    def root(self) -> str:
        """Root prefix for hardware detection on the host."""
        return self._remote_path("mlfleet_root") or "/"

    @property
    def device_root(self) -> str:
        """Prefix of the GPU device nodes as the host's engine sees them."""
        return self._remote_path("mlfleet_device_root") or "/"

    @property
    def cron_dir(self) -> Optional[str]:
        """A cron spool directory for the agent's entry, or None to use `crontab -`."""
        return self._remote_path("mlfleet_cron_dir")

    @property
    def tick_interval(self) -> int:
        """Seconds between the agent's ticks (`mlfleet_tick_interval`, 1 to 60, default 60):
        60 is cron's own minute; less runs `mlfleet-agent daemon` from the same cron line,
        ticking every N seconds for that minute, so cron stays its supervisor."""
        return self._int(("mlfleet_tick_interval",), 60, 1, 60) or 60

    @property
    def registry(self) -> Optional[str]:
        """The registry the host pulls from (`host:port`), or None."""
        var, text = self._word("mlfleet_registry")
        if var is None:
            return None
        if "://" in text:
            raise self._error(
                var, "a registry's host:port", text,
                hint="without the scheme: it goes in mlfleet_registry_scheme (https or http)",
            )  # fmt: skip
        return text

    @property
    def registry_scheme(self) -> str:
        """How the controller talks to the registries this host's images come from (the
        image check before a deployment, the relay's pull-through cache): `https` (the
        default) or `http` for a registry without TLS, e.g. a lab's or a LAN mirror."""
        text = (self._text("mlfleet_registry_scheme") or "https").lower()
        if text not in REGISTRY_SCHEMES:
            raise self._error("mlfleet_registry_scheme", "https or http", text)
        return text

    @property
    def registry_https(self) -> bool:
        """`registry_scheme` is https."""
        return self.registry_scheme == "https"

    @property
    def registry_auth_file(self) -> Optional[str]:
        """A Docker client config (`config.json`, the file `docker login` writes) with this
        host's or group's registry credentials (`mlfleet_registry_auth_file`); None: the
        controller's own, found as the docker CLI finds it ($DOCKER_CONFIG, ~/.docker)."""
        return self._local_path("mlfleet_registry_auth_file")

    @property
    def registry_ca(self) -> Optional[str]:
        """A PEM file with the CA that signed the registry's certificate
        (`mlfleet_registry_ca`), for the controller's own registry requests; None: the
        engine's place for it (/etc/docker/certs.d/HOST:PORT/ca.crt), else the system's."""
        return self._local_path("mlfleet_registry_ca")

    @property
    def store_pull_credentials(self) -> bool:
        """Keep the pull credential on the host (0600, in the agent's directory) so its
        agent can pull again with no controller (`mlfleet_store_pull_credentials`, default
        false: the credential then lives only in the deployment's SSH session)."""
        return self._bool("mlfleet_store_pull_credentials")

    @property
    def transfer(self) -> str:
        """How images reach the host: pull, relay or auto (default pull)."""
        text = self._text("mlfleet_transfer") or "pull"
        if text not in TRANSFER_MODES:
            raise self._error("mlfleet_transfer", "one of " + ", ".join(TRANSFER_MODES), text)
        return text

    @property
    def bwlimit_kbit(self) -> Optional[int]:
        """Bandwidth cap for image transfers in kbit/s, or None."""
        return self._int(("mlfleet_bwlimit_kbit",), None, 1, MAX_BWLIMIT_KBIT)

    @property
    def relay_registry(self) -> Optional[str]:
        """Where the relay's tunnel leads on the controller's side: `upstream` (the registry
        named in the image, raw TCP: plain HTTP registries only), `cache` (a pull-through
        cache mlfleet runs on the controller's loopback; it holds the TLS session and the
        credentials), or a registry's `host:port`. None (unset): upstream for a plain HTTP
        registry, the cache for a TLS one."""
        text = self._text("mlfleet_relay_registry")
        if text is None:
            return None
        if text in ("upstream", "cache") or _HOST_PORT.fullmatch(text):
            return text
        raise self._error(
            "mlfleet_relay_registry", "upstream, cache or a registry's host:port", text
        )

    def validate(
        self, checked: Optional[Set[Tuple[str, Tuple[int, ...]]]] = None, templates: bool = True
    ) -> None:
        """Read every typed setting once, so a bad value fails early with its file:line.

        `checked`, shared by the hosts of one inventory, remembers the values already found
        good (by identity: the very objects of the same group's variables), so that only
        the settings a host's own variables change are read again for it. With `templates`
        False, a template mlfleet cannot evaluate is let through, and a vault-encrypted value
        is not decrypted (both are read for a host a command touches); a setting that uses
        either is never cached.
        """
        if checked is None:
            checked = set()
        settings = {s for var in self.vars if var in _SETTINGS_OF for s in _SETTINGS_OF[var]}
        if templates:
            settings.add("address")  # the name itself, when no ansible_host is set
        for setting in settings:
            values = [self.vars.get(var) for var in _SETTINGS[setting]]
            key = (setting, tuple(id(v) for v in values))
            if key in checked:
                continue
            if not templates and any(isinstance(v, VaultValue) for v in values):
                continue  # decrypted only for a host a command touches
            try:
                getattr(self, setting)
            except UnevaluatedTemplate:
                if templates:
                    raise
                continue
            if not any(is_template(v) or isinstance(v, VaultValue) for v in values):
                checked.add(key)

    # --- typed readers -------------------------------------------------------------------

    def _get(self, *names: str) -> Tuple[Optional[str], Any]:
        """The first of `names` set (to anything but null) and its value, its templates
        evaluated."""
        for name in names:
            value = self.vars.get(name)
            if isinstance(value, VaultValue):
                value = self._revealed_vars()[name]
            if value is not None:
                return name, self._evaluated(name, value) if is_template(value) else value
        return None, None

    def _revealed_vars(self) -> RevealedVars:
        """The variables with a vault-encrypted one decrypted when read: only for a value a
        command uses, at the moment it uses it (never stored)."""
        return RevealedVars(self.vars, self.name, self.keyring)

    def _evaluated(self, var: str, text: str) -> str:
        try:
            return evaluate(text, self._revealed_vars(), self.name, self.environ)
        except TemplateUnsupported as exc:
            raise UnevaluatedTemplate(
                f"host {shown(self.name)}: `{var}` is a Jinja template mlfleet cannot evaluate:"
                f" {exc}",
                where=self.origins.get(var, self.where) or None,
                hint="write the value out for this host, or leave the host out with --limit; "
                "mlfleet evaluates only {{ variable }} and {{ lookup('env', 'NAME') }}",
            ) from None

    def _text(self, *names: str) -> Optional[str]:
        var, value = self._get(*names)
        if var is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._error(var, "non-empty text", value)
        text = value.strip()
        if not text.isprintable():
            odd = next(c for c in text if not c.isprintable())
            what = "a control" if unicodedata.category(odd) == "Cc" else "an unprintable"
            raise ConfigError(
                f"host {shown(self.name)}: `{var}` holds {what} character ({shown(odd)}), "
                "which would reach the host's commands",
                where=self.origins.get(var, self.where) or None,
                hint=f"write {var} without it",
            )
        return text

    def _word(self, *names: str) -> Tuple[Optional[str], str]:
        """(the variable set, its text) for a setting that is one word: a name, an address,
        a command; (None, "") when unset."""
        text = self._text(*names)
        if text is None:
            return None, ""
        var, _ = self._get(*names)
        if any(c.isspace() for c in text):
            raise self._error(var or names[0], "one word, without spaces", text)
        return var, text

    def _int(
        self, names: Tuple[str, ...], default: Optional[int], low: int, high: Optional[int]
    ) -> Optional[int]:
        var, value = self._get(*names)
        if var is None:
            return default
        number = as_int(value)
        if number is None or number < low or (high is not None and number > high):
            span = f"from {_n(low)} to {_n(high)}" if high is not None else f"of at least {low}"
            raise self._error(var, f"a whole number {span}", value)
        return number

    def _local_path(self, *names: str) -> Optional[str]:
        text = self._text(*names)
        return os.path.expanduser(text) if text is not None else None

    def _remote_path(self, name: str) -> Optional[str]:
        text = self._text(name)
        if text is not None and not text.startswith("/"):
            raise self._error(name, "an absolute path on the host", text)
        return text

    def _proxy_jump_from_ssh_args(self) -> Tuple[Optional[str], Any]:
        for var in ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args"):
            _, args = self._get(var)
            if not isinstance(args, str):
                continue
            try:
                jump, proxy_command = _ssh_args_proxy(args)
            except ValueError as exc:
                raise self._error(var, "SSH command-line arguments", args, hint=str(exc)) from None
            if jump is not None:
                return (var, jump) if jump.lower() != "none" else (None, None)
            if proxy_command:
                raise ConfigError(
                    f"host {shown(self.name)}: `{var}` sets a ProxyCommand, which mlfleet does not "
                    "run",
                    where=self.origins.get(var, self.where) or None,
                    hint="set `mlfleet_jump_host: user@bastion:22` for this host or group",
                )
        return None, None

    def _error(
        self, var: str, expected: str, value: Any, hint: Optional[str] = None
    ) -> ConfigError:
        return ConfigError(
            f"host {shown(self.name)}: `{var}` must be {expected}, not {shown(value)}",
            where=self.origins.get(var, self.where) or None,
            hint=hint,
        )


# Each typed setting and the variables it reads (the first one set wins): validate() reads
# a setting again only for a host whose values of these differ.
_SETTINGS: Dict[str, Tuple[str, ...]] = {
    "address": ("ansible_ssh_host", "ansible_host"),  # or the name itself: see validate
    "port": ("ansible_ssh_port", "ansible_port"),
    "user": ("ansible_ssh_user", "ansible_user"),
    "ssh_key": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "known_hosts": ("mlfleet_known_hosts",),
    "jump_host": (
        "mlfleet_jump_host", "ansible_ssh_args", "ansible_ssh_common_args",
        "ansible_ssh_extra_args",
    ),
    "become": ("mlfleet_become", "ansible_become"),
    "python": ("mlfleet_python", "ansible_python_interpreter"),
    "agent_dir": ("mlfleet_agent_dir",),
    "docker_host": ("mlfleet_docker_host",),
    "root": ("mlfleet_root",),
    "device_root": ("mlfleet_device_root",),
    "cron_dir": ("mlfleet_cron_dir",),
    "tick_interval": ("mlfleet_tick_interval",),
    "registry": ("mlfleet_registry",),
    "registry_scheme": ("mlfleet_registry_scheme",),
    "registry_auth_file": ("mlfleet_registry_auth_file",),
    "registry_ca": ("mlfleet_registry_ca",),
    "store_pull_credentials": ("mlfleet_store_pull_credentials",),
    "transfer": ("mlfleet_transfer",),
    "bwlimit_kbit": ("mlfleet_bwlimit_kbit",),
    "relay_registry": ("mlfleet_relay_registry",),
}  # fmt: skip
_SETTINGS_OF: Dict[str, Tuple[str, ...]] = {
    var: tuple(s for s, names in _SETTINGS.items() if var in names)
    for var in {v for names in _SETTINGS.values() for v in names}
}


def _n(number: int) -> str:
    return f"{number:,}" if number >= 100_000 else str(number)  # 65535, but 100,000,000


def as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value)
    return None


def parse_jump_host(text: str) -> JumpHost:
    """`[user@]host[:port]` (also `ssh://...`, IPv6 as `[2001:db8::1]:22`) -> JumpHost.

    Raises ValueError saying what is wrong; a chain of several jump hosts is refused.
    """
    text = text.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://") :]
    if "," in text:
        raise ValueError("only one jump host is supported, not a chain")
    if not text or any(c.isspace() for c in text):
        raise ValueError("expected [user@]host[:port]")
    if not text.isprintable():
        raise ValueError("it holds a control character")
    user, at, rest = text.rpartition("@")
    if at and not user:
        raise ValueError("the user before '@' is empty")
    port_text: Optional[str] = None
    if rest.startswith("["):
        address, closed, tail = rest[1:].partition("]")
        if not closed or (tail and not tail.startswith(":")):
            raise ValueError("expected [address]:port for an IPv6 address")
        port_text = tail[1:] if tail else None
    elif rest.count(":") == 1:
        address, port_text = rest.split(":")
    else:
        address = rest  # a name, or a bare IPv6 address
    if not address:
        raise ValueError("the host is empty")
    port = 22 if port_text is None else as_int(port_text)
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
    return JumpHost(user=user or None, address=address, port=port)


def _ssh_args_proxy(args: str) -> Tuple[Optional[str], bool]:
    """(the first ProxyJump value or None, whether a ProxyCommand is set) in SSH arguments."""
    tokens = shlex.split(args)
    jump: Optional[str] = None
    proxy_command = False
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token.startswith("-J"):
            value: Optional[str] = token[2:] or following
        elif token.startswith("-o"):
            option = token[2:] or following
            key, _, value = option.replace("=", " ", 1).partition(" ")
            key = key.strip().lower()
            proxy_command = proxy_command or key == "proxycommand"
            if key != "proxyjump":
                continue
        else:
            continue
        if jump is None and value and value.strip():  # as in OpenSSH, the first value wins
            jump = value.strip()
    return jump, proxy_command
