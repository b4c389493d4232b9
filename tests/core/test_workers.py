"""The compute pool: work runs in another process when workers are configured, in a
thread otherwise, and a worker that dies costs one retry in a thread, not the call."""

from __future__ import annotations

import os

import numpy as np

from twin.core.workers import WorkerPool, auto_workers, usable_cpus


def _pid_and_sum(x: np.ndarray) -> tuple[int, float]:
    return os.getpid(), float(x.sum())


_DIED = "/nonexistent"


def _die_once(flag: str) -> int:
    if not os.path.exists(flag):
        open(flag, "w").close()
        os._exit(3)  # a worker crash (segfault, OOM kill)
    return os.getpid()


async def test_work_runs_in_a_worker_process_and_results_come_back() -> None:
    pool = WorkerPool(1, preload=("numpy",))
    try:
        await pool.start()
        pid, total = await pool.run(_pid_and_sum, np.arange(10.0))
        assert pid != os.getpid() and total == 45.0
        assert pool.metrics()["compute_process_calls_total"] == 1
    finally:
        pool.close()


async def test_without_workers_work_runs_in_a_thread_of_this_process() -> None:
    pool = WorkerPool(0)
    pid, total = await pool.run(_pid_and_sum, np.ones(3))
    assert (pid, total) == (os.getpid(), 3.0) and pool.mode == "threads"


async def test_a_dead_worker_costs_a_retry_not_the_call(tmp_path) -> None:
    pool = WorkerPool(1, preload=())
    flag = str(tmp_path / "died")
    try:
        pid = await pool.run(_die_once, flag)
        assert pid == os.getpid()  # retried in a thread after the pool broke
        assert pool.restarts == 1
        pid2 = await pool.run(_pid_and_sum, np.zeros(1))
        assert pid2[0] != os.getpid()  # a fresh pool
    finally:
        pool.close()


def test_auto_workers_leaves_the_twin_a_core() -> None:
    assert auto_workers() == min(4, usable_cpus() - 1)


def test_workers_exit_when_the_twin_is_killed(tmp_path) -> None:
    """A SIGKILLed twin cannot close its pool: its worker processes must not outlive it."""
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import asyncio, os, sys\n"
        "from twin.core.workers import WorkerPool\n"
        "async def main():\n"
        "    pool = WorkerPool(1, preload=())\n"
        "    pid = await pool.run(os.getpid)\n"
        "    print(pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    path = tmp_path / "twin_like.py"
    path.write_text(script)
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(proc.stdout.readline())  # type: ignore[union-attr]
        assert worker != proc.pid
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        end = time.monotonic() + 15
        while time.monotonic() < end:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the worker outlived the killed twin")
    finally:
        if proc.poll() is None:
            proc.kill()
