"""A safety timeout for tests of input that used to hang: the call runs in a daemon thread
and the test fails if it has not answered within the cap. A generous cap, not a benchmark."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, TypeVar

import pytest

T = TypeVar("T")

CAP_SECONDS = 10.0


def within(seconds: float, call: Callable[..., T], *args: Any) -> T:
    """`call(*args)`'s result (or its exception), failing the test if it takes longer."""
    outcome: Dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call(*args)
        except BaseException as exc:  # handed to the test's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{getattr(call, '__name__', call)} did not answer within {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
