"""The desired state of the lab's sentiment model on a lab host: what the tests, the demo and
the benchmarks apply (until playbooks produce it, this is the hand-written equivalent)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List

from mlfleet.controller.lab.images import REPOSITORY
from mlfleet.controller.lab.model_data import score

SAMPLE_TEXT = "a great and wonderful model"
VARIANT_SPECS: List[Dict[str, Any]] = [
    {"name": "cuda12", "gpu": "nvidia", "cuda": "12.2", "min_compute_capability": "7.0"},
    {"name": "cuda11", "gpu": "nvidia", "cuda": "11.8"},
    {"name": "rocm", "gpu": "amd", "rocm": "6.0", "gfx": ["gfx90a", "gfx942"]},
    {"name": "cpu"},
]


def sentiment_desired(registry: str, data_dir: str, tag: str, **over: Any) -> Dict[str, Any]:
    """A desired state (agent schema 1) for `tag`, mounting the host's weights read-only and
    checking /health and a real inference against the weights' expected answer."""
    model = json.loads((Path(data_dir) / "model.json").read_text())
    expect = score(model, SAMPLE_TEXT)
    state: Dict[str, Any] = {
        "schema": 1,
        "app": "sentiment",
        "deployment": f"lab-{tag}-{time.time():.0f}",
        "tag": tag,
        "variants": [
            dict(v, image=f"{registry}/{REPOSITORY}:{tag}-{v['name']}") for v in VARIANT_SPECS
        ],
        "container": {
            "ports": [{"container": 8080, "host": 8080}],
            "mounts": [{"source": data_dir, "target": "/data", "read_only": True}],
        },
        "health": {
            "http": [{"port": 8080, "path": "/health"}],
            "inference": [
                {
                    "port": 8080,
                    "path": "/predict",
                    "request": {"text": SAMPLE_TEXT},
                    "expect": {"tag": tag, "predictions": [expect]},
                    "tolerance": 1e-4,
                }
            ],
            "timing": {
                "start_period_s": 3,
                "interval_s": 0.5,
                "timeout_s": 2,
                "retries": 3,
                "deadline_s": 60,
            },
        },
        "monitor_s": 10,
        "retain": 3,
    }
    state.update(over)
    return state
