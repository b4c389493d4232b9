"""bench/_detector.py runs and reports every figure (no timing asserts)."""

from __future__ import annotations

import sys

from support import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from _detector import measure


def test_detector_bench_reports_kernel_reference_and_peer() -> None:
    r = measure(quick=True)
    assert r["points"] > 0 and r["series"] > 0
    assert r["kernel_batch_us"] > 0 and r["kernel_update_us"] > 0 and r["python_us"] > 0
    assert r["kernel_state_bytes_full"] > 0
    assert r["river_hst_us"] is None or r["river_hst_us"] > 0  # River is a bench-only extra
