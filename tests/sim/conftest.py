"""Shared simulator runs (module-scoped, small so the suite stays quick on 2 cores)."""

from __future__ import annotations

import pytest

from appliance.sim import SimConfig, simulate


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim_demo")
    return simulate(SimConfig.demo(), out)
