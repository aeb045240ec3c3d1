"""bench.probes.grid_speedup, which the GPU check calls: the same JSON keys on every device."""

from __future__ import annotations

import json

import pytest

from bench.probes import grid_speedup

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_grid_speedup_smoke_on_cpu_has_the_gpu_check_keys() -> None:
    figures = grid_speedup("cpu", smoke=True)
    assert set(figures) == {"device", "device_name", "cpu_threads", "probes", "epochs", "items", "cpu_seconds",
                            "device_seconds", "speedup"}
    assert figures["device"] == "cpu" and figures["probes"] == 8 and figures["epochs"] == 1
    assert figures["cpu_seconds"] > 0 and figures["device_seconds"] > 0 and figures["speedup"] > 0
    json.dumps(figures)
