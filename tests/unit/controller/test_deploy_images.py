"""Which images a deployment needs in the registry, per host (pure): with stored facts only
the variant the host's agent will select, without them every variant."""

from __future__ import annotations

import json
from typing import Dict, Optional

from mlfleet.agent.protocol import HostFacts
from mlfleet.controller.deploy import (
    _platform_misses,
    expected_variant,
    needed_images,
    playbook_variants,
    stored_facts,
)
from mlfleet.controller.hosts import Host
from mlfleet.controller.playbook import load_playbook
from mlfleet.controller.session import FleetSession
from mlfleet.controller.state import ControllerState
from tests.paths import REPO
from tests.unit.agent.test_selection import host, nvidia_gpu, nvidia_host

PLAYBOOK = load_playbook(REPO / "playbooks" / "sentiment.yml")
EDGE = Host("edge-1", {"mlfleet_registry": "reg:5000", "model_data_dir": "/srv/w"})


def needed_for(facts: Optional[HostFacts]) -> Dict[str, bool]:
    """The images EDGE needs when its stored facts are `facts` (None: none stored)."""
    known, variant = expected_variant(playbook_variants(PLAYBOOK), facts)
    return needed_images(PLAYBOOK, EDGE, "v3", {EDGE.name: variant} if known else {})


def image(variant: str) -> str:
    return f"reg:5000/mlfleet-lab/sentiment:v3-{variant}"


def test_a_cpu_host_with_facts_needs_only_the_cpu_image():
    needed = needed_for(host())
    assert [ref for ref, yes in needed.items() if yes] == [image("cpu")]
    assert set(needed) == {image(v) for v in ("cuda12", "cuda11", "rocm", "cpu")}


def test_a_t4_on_driver_470_needs_the_cuda11_image():
    t4 = nvidia_host("470.182.03", [nvidia_gpu("Tesla T4", "7.5")])
    needed = needed_for(t4)
    assert [ref for ref, yes in needed.items() if yes] == [image("cuda11")]


def test_without_usable_facts_every_variant_is_needed(tmp_path):
    assert all(needed_for(None).values())
    # Stored facts this controller cannot read (another schema, a broken row) count as none.
    state = ControllerState(tmp_path / "state.db")
    session = FleetSession([EDGE], state, connector=lambda h: None)  # type: ignore[arg-type,return-value]
    for facts in ({}, {"schema": 99}, {"schema": 1, "hostname": "x"}):
        state.save_facts(EDGE.name, facts)
        assert stored_facts(session, EDGE) is None, facts


INDEX = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
                   "digest": "sha256:" + "a" * 64, "platform": {"os": "linux", "architecture": "amd64"}}],
}).encode()  # fmt: skip


def test_an_index_without_a_hosts_platform_is_refused_naming_both():
    arch_of = {"jetson-1": "aarch64", "jetson-2": "aarch64", "srv-1": "x86_64"}
    users = ["srv-1", "jetson-1", "jetson-2", "unknown-facts"]
    said = _platform_misses("reg:5000/m:v1-cpu", INDEX, users, arch_of)
    assert said == [
        "image reg:5000/m:v1-cpu has no linux/arm64/v8 image (it has linux/amd64)"
        " (needed by jetson-1, jetson-2)"
    ]
    assert _platform_misses("reg:5000/m:v1-cpu", INDEX, ["srv-1"], arch_of) == []
    single = json.dumps({"schemaVersion": 2, "layers": []}).encode()
    assert _platform_misses("reg:5000/m:v1-cpu", single, users, arch_of) == []
