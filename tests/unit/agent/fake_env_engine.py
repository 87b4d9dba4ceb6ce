"""The fake engine of fakes.py, answering a container's inspect with its Config.Env as
Docker does (the env it was created with): where recreating a release reads its inline env
values back (the record keeps only their keyed hashes)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from tests.unit.agent.fakes import FakeEngine


class EngineKeepingEnv(FakeEngine):
    def container_inspect(self, container: str) -> Optional[Dict[str, Any]]:
        info = super().container_inspect(container)
        if info is not None:
            info["Config"]["Env"] = list(self._get(container).config.get("Env") or [])
        return info
