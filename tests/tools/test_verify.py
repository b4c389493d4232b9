from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_seed_verify_script_runs_an_end_to_end_check() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "verify_digital_twin_integration.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        sum(line.startswith("PASS  ") for line in r.stdout.splitlines()) == 8
        and "ALL CHECKS PASSED" in r.stdout
    )
