"""A registry credential as it crosses from the controller to a host: the one type both
sides use for it (standard library only, Python 3.8).

It travels only on the SSH session's stdin (`protocol.ApplyRequest`) and reaches the engine
only as the `X-Registry-Auth` header of a pull. Its `repr` hides the secret, and nothing
writes it to a file, a log, a state database or a process's arguments or environment,
except the host store an operator opts into (agent/host_credentials.py).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping


class CredentialError(ValueError):
    """A credential message is malformed (the text never contains the secret)."""


@dataclass(frozen=True)
class RegistryCredential:
    """Username and password, or an identity token (a refresh token that OAuth registries
    hand out for `docker login`), for one registry (`serveraddress`, e.g. `10.77.0.1:5000`)."""

    serveraddress: str
    username: str = ""
    password: str = field(default="", repr=False)
    identitytoken: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.serveraddress:
            raise CredentialError("a registry credential needs the registry's address")
        if not (self.password or self.identitytoken):
            raise CredentialError(
                f"the credential for {self.serveraddress} has neither a password nor a token"
            )

    def x_registry_auth(self) -> str:
        """The engine's `X-Registry-Auth` header: base64url of the auth config JSON (the
        engine then answers the registry's Basic or Bearer challenge itself)."""
        return base64.urlsafe_b64encode(json.dumps(self._auth_config()).encode()).decode()

    def _auth_config(self) -> Dict[str, str]:
        out = {"serveraddress": self.serveraddress}
        if self.identitytoken:
            out["identitytoken"] = self.identitytoken
        else:
            out.update(username=self.username, password=self.password)
        return out

    def to_dict(self) -> Dict[str, str]:
        """For the SSH stdin message only."""
        return self._auth_config()

    @classmethod
    def from_dict(cls, data: Any) -> RegistryCredential:
        if not isinstance(data, Mapping):
            raise CredentialError("a registry credential must be a JSON object")
        values: Dict[str, str] = {}
        for key in ("serveraddress", "username", "password", "identitytoken"):
            value = data.get(key, "")
            if not isinstance(value, str):
                raise CredentialError(f"registry credential `{key}` must be a string")
            values[key] = value
        return cls(**values)
