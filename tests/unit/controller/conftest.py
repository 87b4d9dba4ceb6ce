"""Fixtures shared by the controller's unit tests."""

from __future__ import annotations

from typing import List

import pytest

from mlfleet.controller.transport import KnownHosts


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    """The path of each call of KnownHosts.parse (the real one, wrapped)."""
    calls: List[str] = []
    real = KnownHosts.parse.__func__  # type: ignore[attr-defined]

    def counted(cls: type, text: str, path: str) -> KnownHosts:
        calls.append(path)
        return real(cls, text, path)

    monkeypatch.setattr(KnownHosts, "parse", classmethod(counted))
    return calls
