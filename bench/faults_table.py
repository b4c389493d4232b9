"""Runs the fault-injection tests and prints their figures as one table.

    python bench/faults_table.py            # markdown table on stdout
    python bench/faults_table.py --json     # one JSON object per fault

Every row comes from a real run: real nats-server processes (JetStream on), real twins
(a ``polaris-twin`` subprocess for kill -9), audited through gRPC only. "applied" is the
number of samples the twin holds per ``Manage series_stats`` (exact per-series count and
sum checked in the test), "duplicates" the events applied more than once, "recovery"
what each row's note says it measures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/faults/test_kill9_exactly_once.py",
    "tests/faults/test_nats_restart.py",
    "tests/faults/test_slow_model_backpressure.py",
    "tests/durability/test_jetstream_durability.py::test_lost_acks_are_redelivered_and_skipped_so_each_event_applies_once",
    "tests/durability/test_jetstream_durability.py::test_bad_or_old_snapshot_on_start",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *TESTS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    rows = [
        json.loads(line.split(" ", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith("FAULT-ROW ")
    ]
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        print("| fault | events published | events applied | duplicates | recovery (s) | notes |")
        print("|---|---:|---:|---:|---:|---|")
        for r in rows:
            rec = "—" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}"
            print(
                f"| {r['fault']} | {r['published']:,} | {r['applied']:,} | {r['duplicates']} | "
                f"{rec} | {r['note']} |"
            )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    print(f"\npytest: {summary}", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
