"""How the agent authenticates to a registry and trusts it, the way the host's Docker engine
and CLI do (standard library only, Python 3.8):

- trust: the default CAs plus `/etc/docker/certs.d/HOST:PORT/*.crt` (and a client
  certificate pair), as the engine reads them; verification is never switched off;
- challenges: a 401's `WWW-Authenticate` answered with HTTP Basic, or with a Bearer token
  fetched from the challenge's realm (the distribution token spec,
  distribution/docs/spec/auth/token.md and oauth.md);
- the credential an operator placed on the host, for re-pulls with no controller around:
  the agent's opt-in store, else the host's Docker client config (`docker login`), found the
  way the docker CLI finds it (cli/config: credHelpers, credsStore, auths).

No message, repr or log line here contains a password or token.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mlfleet.agent.credential import CredentialError, RegistryCredential
from mlfleet.agent.imageref import split_host_port

CERTS_DIR = "/etc/docker/certs.d"
"""Where the engine looks for a registry's CA and client certificate (one directory per
`HOST:PORT`). Messages always name this path: it is where the operator must put the file,
wherever the agent itself reads the host from."""

STORE_NAME = "registry-credentials.json"
STORE_SCHEMA = 1
HELPER_TIMEOUT = 10.0
TOKEN_CLIENT_ID = "mlfleet"  # the OAuth2 `client_id` the token spec requires with a refresh token
IDENTITY_TOKEN_USER = "<token>"  # a credential helper's Username for an identity token

_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HUB_HELPER_ADDRESS = "https://index.docker.io/v1/"  # how `docker login` names Docker Hub
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 7230 token
_BARE_VALUE = re.compile(r'[^\s,"]*')  # a token, or a token68 such as `abc==`


# --- errors ------------------------------------------------------------------------------


class RegistryAccessError(Exception):
    """The registry will not serve this host as things stand (credentials, trust): a pull
    would fail the same way, so say so before pulling."""

    def __init__(self, registry: str, message: str):
        super().__init__(message)
        self.registry = registry


class RegistryAuthError(RegistryAccessError):
    """The registry wants credentials, or refused the ones given. `username`: whose were
    refused (None when none were given, or the credential is a bare identity token)."""

    def __init__(self, registry: str, message: str, username: Optional[str] = None):
        super().__init__(registry, message)
        self.username = username

    @classmethod
    def needs_credentials(cls, registry: str, repository: str = "") -> RegistryAuthError:
        what = f" to pull {repository}" if repository else ""
        return cls(
            registry,
            f"{registry} needs registry credentials{what}, and none were given for it",
        )

    @classmethod
    def refused(
        cls, registry: str, credential: RegistryCredential, repository: str = ""
    ) -> RegistryAuthError:
        who = _who(credential)
        may = f" and that {who} may pull {repository}" if repository else ""
        return cls(
            registry,
            f"{registry} refused the credentials for {who}: check the password or token{may}",
            username=None if who == _TOKEN_ONLY else who,
        )


class RegistryTrustError(RegistryAccessError):
    """The registry's TLS certificate did not verify, or its certs.d directory is unusable."""

    @classmethod
    def untrusted(cls, registry: str, reason: str) -> RegistryTrustError:
        ca = f"{CERTS_DIR}/{registry}/ca.crt"
        if "mismatch" in reason.lower():  # trusted, but not issued for this address
            return cls(
                registry,
                f"{registry}: its certificate is not valid for this address ({reason}):"
                f" reissue it with {split_host_port(registry)[0]} among its names",
            )
        return cls(
            registry,
            f"{registry}: its certificate is not trusted: place its CA at {ca} ({reason})",
        )


_TOKEN_ONLY = "its identity token"


def _who(credential: RegistryCredential) -> str:
    if credential.username and credential.username != IDENTITY_TOKEN_USER:
        return credential.username
    return _TOKEN_ONLY


def refusal(
    registry: str, credential: Optional[RegistryCredential], repository: str = ""
) -> RegistryAuthError:
    """The error for a 401/403 after this host said who it is (or did not)."""
    if credential is None:
        return RegistryAuthError.needs_credentials(registry, repository)
    return RegistryAuthError.refused(registry, credential, repository)


def trust_failure(registry: str, exc: BaseException) -> Optional[RegistryTrustError]:
    """The RegistryTrustError for a failed certificate check (urllib wraps it in
    URLError), None for any other failure."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return RegistryTrustError.untrusted(registry, reason.verify_message or str(reason))
    return None


# --- trust -------------------------------------------------------------------------------


def tls_context(registry: str, certs_dir: str = CERTS_DIR) -> ssl.SSLContext:
    """The verifying context the engine would use for `registry`: the system CAs plus
    `certs_dir/registry/*.crt`, and the client certificate of a `*.cert`/`*.key` pair (the
    engine's ReadCertsDirectory rules, including its refusal of half a pair)."""
    context = ssl.create_default_context()
    directory = os.path.join(certs_dir, registry)
    if "/" in registry or registry in ("", ".", "..") or not os.path.isdir(directory):
        return context
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        try:
            if name.endswith(".crt"):
                context.load_verify_locations(cafile=path)
            elif name.endswith(".cert"):
                context.load_cert_chain(path, _pair(registry, path, ".cert", ".key"))
            elif name.endswith(".key"):
                _pair(registry, path, ".key", ".cert")
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise RegistryTrustError(
                registry, f"{path}: not a usable certificate or key ({exc}): replace it"
            ) from None
    return context


def _pair(registry: str, path: str, ext: str, other_ext: str) -> str:
    other = path[: -len(ext)] + other_ext
    if not os.path.exists(other):
        raise RegistryTrustError(
            registry,
            f"{path} has no {os.path.basename(other)} beside it: a client certificate needs"
            " its key (CA certificates must end in .crt)",
        )
    return other


class _SameOriginRedirect(urllib.request.HTTPRedirectHandler):
    """Follows redirects, carrying `Authorization` only to the same scheme, host and port:
    blob downloads redirect to storage that must not see the registry's token (and S3
    refuses a request with two authorizations)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> Optional[urllib.request.Request]:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and _origin(newurl) == _origin(req.full_url):
            new.add_unredirected_header("Authorization", auth)
        return new


def _origin(url: str) -> Tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.rpartition("@")[2]


def registry_opener(context: Optional[ssl.SSLContext]) -> urllib.request.OpenerDirector:
    """An opener that verifies with `context` and keeps credentials on the registry's own
    origin. Set `Authorization` with `add_unredirected_header`."""
    handlers: List[urllib.request.BaseHandler] = [_SameOriginRedirect()]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


# --- challenges --------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header: the scheme (lowercase) and its
    parameters (names lowercase, values unquoted)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str:
        return self.params.get(name, "")


def parse_challenges(header: str) -> List[Challenge]:
    """RFC 7235 challenges: `Bearer realm="https://a/token",service="x",scope="repository:
    t/m:pull", Basic realm="r"` -> two Challenges. Commas inside quoted values stay in the
    value. Pass several headers joined with ", ". ValueError on an unreadable header."""
    found: List[Tuple[str, Dict[str, str]]] = []
    pos = 0
    while True:
        pos = _skip(header, pos, " \t,")
        if pos >= len(header):
            return [Challenge(scheme, params) for scheme, params in found]
        match = _TOKEN.match(header, pos)
        if match is None:
            raise ValueError(f"unreadable WWW-Authenticate header near {header[pos:][:20]!r}")
        pos = _skip(header, match.end(), " \t")
        if found and header.startswith("=", pos):  # a parameter of the last challenge
            value, pos = _param_value(header, _skip(header, pos + 1, " \t"))
            found[-1][1][match.group().lower()] = value
        else:
            found.append((match.group().lower(), {}))


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _param_value(text: str, pos: int) -> Tuple[str, int]:
    if not text.startswith('"', pos):
        match = _BARE_VALUE.match(text, pos)
        assert match is not None  # it matches the empty string
        return match.group(), match.end()
    out: List[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text):
            pos += 1
            char = text[pos]
        out.append(char)
        pos += 1
    raise ValueError("unterminated quoted value in a WWW-Authenticate header")


def basic_authorization(credential: RegistryCredential) -> str:
    """`Basic base64(user:password)`."""
    pair = f"{credential.username}:{credential.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def token_request(
    challenge: Challenge, credential: Optional[RegistryCredential]
) -> urllib.request.Request:
    """The token request a Bearer challenge asks for (pure): with an identity token, the
    OAuth2 refresh-token grant (a POST, token spec oauth.md); else a GET of the realm with
    service and scope, Basic-authenticated when there is a password, anonymous when not."""
    realm = challenge.param("realm")
    query = {k: challenge.param(k) for k in ("service", "scope") if challenge.param(k)}
    if credential is not None and credential.identitytoken:
        form = dict(
            query,
            grant_type="refresh_token",
            refresh_token=credential.identitytoken,
            client_id=TOKEN_CLIENT_ID,
        )
        return urllib.request.Request(
            realm,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
    if query:
        realm += ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
    req = urllib.request.Request(realm)
    if credential is not None:
        req.add_unredirected_header("Authorization", basic_authorization(credential))
    return req


class RegistryAuthorizer:
    """Answers one registry's challenges with one credential (or none). Tokens are kept
    per (realm, service, scope) for the life of the object: a probe lives seconds, and the
    token spec's shortest token lifetime is 60 s."""

    def __init__(
        self,
        registry: str,
        credential: Optional[RegistryCredential] = None,
        *,
        opener: Optional[urllib.request.OpenerDirector] = None,
        timeout: float = 10.0,
        plain_http: bool = False,
    ):
        self.registry = registry
        self.credential = credential
        self.timeout = timeout
        self.plain_http = plain_http
        self._opener = opener or registry_opener(ssl.create_default_context())
        self._tokens: Dict[Tuple[str, str, str], str] = {}

    def authorization(self, challenges: Sequence[Challenge], repository: str = "") -> str:
        """The `Authorization` value to retry a 401 with; RegistryAuthError when there is
        nothing to answer with."""
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None:
            return "Bearer " + self._token(bearer, repository)
        if any(c.scheme == "basic" for c in challenges):
            return self._basic(repository)
        if challenges:
            schemes = ", ".join(sorted({c.scheme for c in challenges}))
            raise RegistryAuthError(
                self.registry,
                f"{self.registry} asks for {schemes} authentication; registries answer"
                " Docker with Basic or Bearer",
            )
        raise refusal(self.registry, self.credential, repository)

    def _basic(self, repository: str) -> str:
        if self.credential is None:
            raise RegistryAuthError.needs_credentials(self.registry, repository)
        if not self.credential.password:
            raise RegistryAuthError(
                self.registry,
                f"{self.registry} asks for a username and password, and its credential is an"
                " identity token: give a password instead",
                username=self.credential.username or None,
            )
        return basic_authorization(self.credential)

    def _token(self, challenge: Challenge, repository: str) -> str:
        key = (challenge.param("realm"), challenge.param("service"), challenge.param("scope"))
        if key not in self._tokens:
            self._check_realm(challenge.param("realm"))
            self._tokens[key] = self._fetch_token(challenge, repository)
        return self._tokens[key]

    def _check_realm(self, realm: str) -> None:
        # A realm is where the password goes: never a file:// URL (urllib would open it),
        # never plain HTTP from a TLS registry.
        scheme = urllib.parse.urlsplit(realm).scheme
        if scheme == "https" or (scheme == "http" and (self.plain_http or not self.credential)):
            return
        raise RegistryAuthError(
            self.registry,
            f"{self.registry} sends its token requests to {realm!r}: credentials go only to"
            " an https:// token service",
        )

    def _fetch_token(self, challenge: Challenge, repository: str) -> str:
        req = token_request(challenge, self.credential)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                answer = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in (401, 403):
                raise refusal(self.registry, self.credential, repository) from None
            raise
        except urllib.error.URLError as exc:
            trust = trust_failure(self.registry, exc)
            if trust is not None:
                raise trust from None
            raise
        token = (
            (answer.get("token") or answer.get("access_token"))
            if isinstance(answer, dict)
            else None
        )
        if not isinstance(token, str) or not token:
            raise ValueError(f"the token service of {self.registry} answered without a token")
        return token


class RegistrySession:
    """GETs from one registry the way the engine would: its trust, answering a challenge
    once per request with the credential (a second 401, or a 403, is a refusal)."""

    def __init__(
        self,
        registry: str,
        credential: Optional[RegistryCredential] = None,
        *,
        plain_http: bool = False,
        timeout: float = 10.0,
        certs_dir: str = CERTS_DIR,
    ):
        self.registry = registry
        self.timeout = timeout
        context = None if plain_http else tls_context(registry, certs_dir)
        self._opener = registry_opener(context)
        self.authorizer = RegistryAuthorizer(
            registry, credential, opener=self._opener, timeout=timeout, plain_http=plain_http
        )
        self._authorization: Optional[str] = None

    def get(self, url: str, accept: str, repository: str = "", limit: int = 16 << 20) -> bytes:
        """The body at `url` (at most `limit` bytes). RegistryAuthError, RegistryTrustError;
        OSError (urllib's errors) and ValueError when the registry cannot be asked."""
        for answered in (False, True):
            try:
                return self._get(url, accept, limit)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code not in (401, 403):
                    raise
                if answered or exc.code == 403:
                    raise refusal(self.registry, self.authorizer.credential, repository) from None
                header = ", ".join(exc.headers.get_all("WWW-Authenticate") or [])
                self._authorization = self.authorizer.authorization(
                    parse_challenges(header), repository
                )
        raise AssertionError("unreachable: the second answer returns or raises")

    def _get(self, url: str, accept: str, limit: int) -> bytes:
        req = urllib.request.Request(url, headers={"Accept": accept})
        if self._authorization:
            req.add_unredirected_header("Authorization", self._authorization)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                body = resp.read(limit + 1)
        except urllib.error.URLError as exc:  # an HTTPError is no trust failure: raised as is
            trust = trust_failure(self.registry, exc)
            if trust is not None:
                raise trust from None
            raise
        if len(body) > limit:
            raise ValueError(f"{url} answered more than {limit} bytes")
        return body


# --- credentials on the host -------------------------------------------------------------


def registry_hostname(address: str) -> str:
    """How the docker CLI compares registry names (ConvertToHostname): the scheme and any
    path dropped (`https://h:5000/v1/` -> `h:5000`); Docker Hub's names are one."""
    host = address.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in _HUB_NAMES else host


def host_credential(
    registry: str,
    agent_dir: str,
    environ: Mapping[str, str] = os.environ,
    home: Optional[str] = None,
) -> Optional[RegistryCredential]:
    """The credential an operator placed on this host for `registry` (`10.77.0.1:5000`),
    for pulls with no controller around: the agent's opt-in store first, then the host's
    Docker client config. None when there is none; CredentialError, naming the file, when
    one of them is malformed."""
    stored = _read_store(store_path(agent_dir)).get(registry_hostname(registry))
    if stored is not None:
        return stored
    return docker_config_credential(registry, environ, home)


# The opt-in store: what `docker login` would leave, but only for the agent, and only when
# the operator asks for it.


def store_path(agent_dir: str) -> str:
    return os.path.join(agent_dir, STORE_NAME)


def store_credential(agent_dir: str, credential: RegistryCredential) -> None:
    """Keep `credential` in the agent's store (mode 0600, replaced atomically), beside the
    other registries' credentials. A store open to others is rewritten 0600: that is the
    fix, and only reading it for a pull refuses."""
    path = store_path(agent_dir)
    stored = _read_store(path, private=False)
    stored[registry_hostname(credential.serveraddress)] = credential
    _write_store(path, stored)


def forget_credential(agent_dir: str, registry: str) -> bool:
    """Drop `registry`'s credential from the store; whether there was one. The file goes
    when it holds no credential any more."""
    path = store_path(agent_dir)
    stored = _read_store(path, private=False)
    if stored.pop(registry_hostname(registry), None) is None:
        return False
    if stored:
        _write_store(path, stored)
    else:
        os.unlink(path)
    return True


def _read_store(path: str, private: bool = True) -> Dict[str, RegistryCredential]:
    """The store's credentials; with `private`, CredentialError when group or others may
    read or write the file (its secrets may be known, or planted)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
        if private and mode & 0o077:
            raise CredentialError(
                f"{path} holds registry passwords and is open to group or others"
                f" (mode {mode:04o}): run chmod 600 {path}"
            )
        raw = fh.read()
    return parse_store(raw, path)


def parse_store(raw: bytes, path: str) -> Dict[str, RegistryCredential]:
    """The store's credentials by registry (pure; `path` names the file in errors)."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise CredentialError(f"{path} is not JSON: fix or remove it") from None
    if not isinstance(data, dict) or data.get("schema") != STORE_SCHEMA:
        raise CredentialError(f"{path}: expected {{'schema': {STORE_SCHEMA}, 'credentials': ...}}")
    entries = data.get("credentials")
    if not isinstance(entries, dict):
        raise CredentialError(f"{path}: `credentials` must be an object")
    out: Dict[str, RegistryCredential] = {}
    for registry, entry in entries.items():
        try:
            out[registry_hostname(registry)] = RegistryCredential.from_dict(entry)
        except CredentialError as exc:
            raise CredentialError(f"{path}, {registry}: {exc}") from None
    return out


def _write_store(path: str, credentials: Mapping[str, RegistryCredential]) -> None:
    data = {
        "schema": STORE_SCHEMA,
        "credentials": {r: c.to_dict() for r, c in sorted(credentials.items())},
    }
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = os.path.join(directory, f".{STORE_NAME}.{os.getpid()}.tmp")
    if os.path.lexists(tmp):  # left by a crashed writer with our pid
        os.unlink(tmp)
    # Created 0600 from the start: the secret is never in a file others may read.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# The host's Docker client config (`docker login`), read as the docker CLI reads it.


def docker_config_path(environ: Mapping[str, str] = os.environ, home: Optional[str] = None) -> str:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (cli/config.Dir)."""
    if environ.get("DOCKER_CONFIG"):
        return os.path.join(environ["DOCKER_CONFIG"], "config.json")
    home = home or environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".docker", "config.json")


def docker_config_credential(
    registry: str, environ: Mapping[str, str] = os.environ, home: Optional[str] = None
) -> Optional[RegistryCredential]:
    """`registry`'s credential from the Docker client config: its credential helper
    (`credHelpers[registry]`, else `credsStore`) when one is set, as the docker CLI does,
    else `auths`. None when there is none."""
    path = docker_config_path(environ, home)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read it ({exc.strerror})") from None
    config = _parse_docker_config(raw, path)
    helper = credential_helper(config, registry, path)
    if helper is not None:
        return helper_credential(helper, registry, environ, path)
    return auths_credential(config, registry, path)


def _parse_docker_config(raw: bytes, path: str) -> Dict[str, Any]:
    try:
        config = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise CredentialError(f"{path} is not JSON: fix it or run docker login again") from None
    if not isinstance(config, dict):
        raise CredentialError(f"{path} must hold a JSON object")
    for key in ("auths", "credHelpers"):
        if not isinstance(config.get(key) or {}, dict):
            raise CredentialError(f"{path}: `{key}` must be an object")
    if not isinstance(config.get("credsStore") or "", str):
        raise CredentialError(f"{path}: `credsStore` must be a string")
    return config


def _entry_for(entries: Mapping[str, Any], registry: str) -> Tuple[str, Any]:
    """The (key, value) for `registry`: the exact key, else one naming the same host
    (`https://h:5000`, `h:5000/v1/`); ("", None) when none does."""
    if registry in entries:
        return registry, entries[registry]
    host = registry_hostname(registry)
    for key, value in entries.items():
        if registry_hostname(key) == host:
            return key, value
    return "", None


def credential_helper(config: Mapping[str, Any], registry: str, path: str) -> Optional[str]:
    """The credential helper's name for `registry` (pure), None when the config sets none."""
    name = _entry_for(config.get("credHelpers") or {}, registry)[1] or config.get("credsStore")
    if not name:
        return None
    if not isinstance(name, str) or not _HELPER_NAME.fullmatch(name):
        raise CredentialError(f"{path}: {name!r} is not a credential helper's name")
    return name


def helper_credential(
    helper: str, registry: str, environ: Mapping[str, str], path: str
) -> Optional[RegistryCredential]:
    """Ask `docker-credential-<helper> get` for `registry` (the credential-helpers
    protocol: the server address on stdin, JSON on stdout). None when it has none."""
    program_name = f"docker-credential-{helper}"
    program = shutil.which(program_name, path=environ.get("PATH", os.defpath))
    if program is None:
        raise CredentialError(
            f"{path} names the credential helper {program_name}; it is not on PATH"
        )
    address = _HUB_HELPER_ADDRESS if registry_hostname(registry) == "docker.io" else registry
    try:
        done = subprocess.run(
            [program, "get"],
            input=address.encode(),
            capture_output=True,
            env=dict(environ),
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CredentialError(
            f"{program_name} get did not answer within {HELPER_TIMEOUT:.0f} s"
        ) from None
    except OSError as exc:
        raise CredentialError(f"{program_name} could not run: {exc.strerror}") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode(errors="replace").strip()
        if "credentials not found" in said.lower():
            return None
        first = said.splitlines()[0][:200] if said else f"exit status {done.returncode}"
        raise CredentialError(f"{program_name} get failed for {registry}: {first}")
    return parse_helper_answer(done.stdout, registry, program_name)


def parse_helper_answer(raw: bytes, registry: str, program: str) -> Optional[RegistryCredential]:
    """A helper's `{"ServerURL", "Username", "Secret"}` as a credential (pure); Username
    `<token>` marks Secret as an identity token."""
    try:
        answer = json.loads(raw)
    except ValueError:
        raise CredentialError(f"{program} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise CredentialError(f"{program} answered something that is not a JSON object")
    username, secret = answer.get("Username") or "", answer.get("Secret") or ""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise CredentialError(f"{program}: Username and Secret must be strings")
    if not secret:
        return None
    if username == IDENTITY_TOKEN_USER:
        return RegistryCredential(registry, identitytoken=secret)
    return RegistryCredential(registry, username=username, password=secret)


def auths_credential(
    config: Mapping[str, Any], registry: str, path: str
) -> Optional[RegistryCredential]:
    """`registry`'s entry in `auths` (pure): `auth` (base64 of user:password), or
    `username`/`password`, and an `identitytoken`. None when there is none or it is empty."""
    key, entry = _entry_for(config.get("auths") or {}, registry)
    if entry is None:
        return None
    where = f"{path}: auths[{key!r}]"
    if not isinstance(entry, dict):
        raise CredentialError(f"{where} must be an object")
    username, password = _decode_auth(entry.get("auth") or "", where)
    username = username or _text(entry, "username", where)
    password = password or _text(entry, "password", where)
    token = _text(entry, "identitytoken", where)
    if not (password or token):
        return None
    return RegistryCredential(registry, username=username, password=password, identitytoken=token)


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key) or ""
    if not isinstance(value, str):
        raise CredentialError(f"{where}.{key} must be a string")
    return value


def _decode_auth(auth: Any, where: str) -> Tuple[str, str]:
    if not auth:
        return "", ""
    if not isinstance(auth, str):
        raise CredentialError(f"{where}.auth must be a string")
    try:
        text = base64.b64decode(auth + "=" * (-len(auth) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise CredentialError(f"{where}.auth is not base64 of user:password") from None
    username, colon, password = text.partition(":")
    if not colon:
        raise CredentialError(f"{where}.auth is not base64 of user:password")
    return username, password
