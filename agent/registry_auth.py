"""How the agent authenticates to a registry and trusts it, the way the host's Docker engine
and CLI do (standard library only, Python 3.8):

- trust: the default CAs plus `/etc/docker/certs.d/HOST:PORT/*.crt` (and a client
  certificate pair), as the engine reads them; verification is never switched off;
- challenges: a 401's `WWW-Authenticate` answered with HTTP Basic, or with a Bearer token
  fetched from the challenge's realm (the distribution token spec,
  distribution/docs/spec/auth/token.md and oauth.md).

Which credential to answer with is the caller's: the controller's, or the one an operator
placed on the host (host_credentials). No message, repr or log line here contains a password
or token.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mlfleet.agent.credential import RegistryCredential
from mlfleet.agent.imageref import split_host_port

CERTS_DIR = "/etc/docker/certs.d"
"""Where the engine looks for a registry's CA and client certificate (one directory per
`HOST:PORT`). Messages always name this path: it is where the operator must put the file,
wherever the agent itself reads the host from."""

TOKEN_CLIENT_ID = "mlfleet"  # the OAuth2 `client_id` the token spec requires with a refresh token
IDENTITY_TOKEN_USER = "<token>"  # a credential helper's Username for an identity token

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
