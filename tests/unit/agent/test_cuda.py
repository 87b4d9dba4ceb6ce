from __future__ import annotations

import pytest

from mlfleet.agent.cuda import max_cuda_for_driver, min_driver_for_cuda, parse_version
from mlfleet.agent.rocm import gfx_name, gfx_target_version


@pytest.mark.parametrize(
    ("driver", "cuda"),
    [("470.182.03", (11, 4)), ("535.183.01", (12, 2)), ("550.54.15", (12, 4)),
     ("570.133.07", (12, 8)), ("450.51.05", (11, 0)), ("440.33.01", None)],
)  # fmt: skip
def test_newest_cuda_a_driver_supports(driver: str, cuda):
    assert max_cuda_for_driver(driver) == cuda


def test_minor_version_compatibility_lowers_the_floor_within_a_major():
    assert min_driver_for_cuda((12, 2), minor_compat=False) == "535.54.03"
    assert min_driver_for_cuda((12, 2), minor_compat=True) == "525"
    assert min_driver_for_cuda((11, 8), minor_compat=True) == "450.80.02"
    assert min_driver_for_cuda((12, 7), minor_compat=False) == "560.28.03"
    assert min_driver_for_cuda((9, 0), minor_compat=False) is None


def test_versions_compare_numerically():
    assert parse_version("470.182.03") < parse_version("525")
    with pytest.raises(ValueError):
        parse_version("535.x")


@pytest.mark.parametrize(
    ("gfx", "number"), [("gfx90a", 90010), ("gfx1100", 110000), ("gfx942", 90402)]
)
def test_gfx_target_versions_round_trip(gfx: str, number: int):
    assert gfx_target_version(gfx) == number
    assert gfx_name(number) == gfx
