"""The lab model's weights file (model.json) and a pure-Python reference scorer.

The image's server (lab/image/server.py) scores with numpy; tests compare it against
`score` here, so the tokenizer and the sigmoid must stay identical in both places.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

FORMAT = "mlfleet-lab-sentiment/1"
MODEL_FILE = "model.json"

# Hand-picked weights: no randomness, so every build of the lab serves identical answers.
# fmt: off
_WEIGHTS: list[tuple[str, float]] = [
    # positive
    ("good", 1.2), ("great", 1.8), ("excellent", 2.4), ("amazing", 2.1), ("love", 1.9),
    ("loved", 1.9), ("wonderful", 2.2), ("happy", 1.5), ("best", 1.7), ("fantastic", 2.3),
    ("nice", 1.0), ("enjoy", 1.3), ("enjoyed", 1.3), ("perfect", 2.0), ("fast", 0.8),
    ("reliable", 1.1),
    # negative
    ("bad", -1.4), ("terrible", -2.4), ("awful", -2.3), ("hate", -2.0), ("hated", -2.0),
    ("worst", -2.2), ("poor", -1.5), ("boring", -1.3), ("broken", -1.8), ("slow", -0.9),
    ("disappointing", -1.9), ("disappointed", -1.9), ("useless", -2.1), ("sad", -1.2),
    ("crash", -1.6), ("buggy", -1.5),
    # negators and near-neutral words
    ("not", -0.6), ("no", -0.4), ("never", -0.5), ("but", -0.2), ("okay", 0.1),
    ("the", 0.0), ("and", 0.0), ("it", 0.0), ("movie", 0.0), ("product", 0.0),
]
# fmt: on
# Slightly sceptical: text with no known words leans negative.
_BIAS = -0.1

_WORD = re.compile(r"[a-z]+")


def make_model() -> dict[str, Any]:
    """The model as the dict that model.json holds."""
    return {
        "format": FORMAT,
        "vocab": [word for word, _ in _WEIGHTS],
        "weights": [weight for _, weight in _WEIGHTS],
        "bias": _BIAS,
    }


def write_model(directory: Path) -> Path:
    """Write model.json into `directory` (created 0755, file 0644) and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Explicit modes: the container runs as another user and must be able to read the volume.
    os.chmod(directory, 0o755)
    path = directory / MODEL_FILE
    tmp = directory / (MODEL_FILE + ".tmp")
    tmp.write_text(json.dumps(make_model(), indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o644)
    tmp.replace(path)  # atomic, so a server never reads half a file
    return path


def tokenize(text: str) -> list[str]:
    """Lowercase, split on anything that is not a letter a-z."""
    return _WORD.findall(text.lower())


def _sigmoid(z: float) -> float:
    # Two branches so that math.exp never overflows on long, very one-sided texts.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def score(model: dict[str, Any], text: str) -> dict[str, Any]:
    """Reference answer: {"label": "positive"|"negative", "score": P(positive), 6 decimals}."""
    weight = dict(zip(model["vocab"], model["weights"]))
    z = float(model["bias"]) + sum(weight.get(token, 0.0) for token in tokenize(text))
    p = _sigmoid(z)
    return {"label": "positive" if p >= 0.5 else "negative", "score": round(p, 6)}
