"""What one detector found: GPUs, its vendor facts, and warnings for the operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, List, Optional, TypeVar

from mlfleet.agent.facts import Gpu

F = TypeVar("F")


@dataclass
class Finding(Generic[F]):
    gpus: List[Gpu] = field(default_factory=list)
    facts: Optional[F] = None
    warnings: List[str] = field(default_factory=list)
