"""The `polaris-twin` command as a person runs it: real subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

CLI = [sys.executable, "-m", "twin.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_validate_only_accepts_defaults() -> None:
    r = run("--validate-only")
    assert r.returncode == 0, r.stderr
    assert "configuration valid" in r.stdout


def test_validate_only_prints_every_error_with_its_path(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "digital_twin:\n  grpc:\n    port: 99999\n    max_workers: 0\n  nats:\n    "
        "batch_timeout_sec: -1\n    surprise: 1\n"
        "  world_model:\n    implementation: mock\n  debugging:\n    log_level: LOUD\n"
    )
    r = run("--validate-only", "--config", str(f))
    assert r.returncode == 2
    for path in (
        "digital_twin.grpc.port",
        "digital_twin.grpc.max_workers",
        "digital_twin.nats.batch_timeout_sec",
        "digital_twin.nats:",
        "digital_twin.debugging.log_level",
    ):
        assert path in r.stderr, r.stderr
    assert "5 error(s)" in r.stderr


def test_validate_only_reports_missing_file_and_unknown_model(tmp_path: Path) -> None:
    r = run("--validate-only", "--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "not found" in r.stderr
    r = run("--validate-only", "--world-model", "crystal_ball")
    assert r.returncode == 2 and "unknown world model 'crystal_ball'" in r.stderr
    r = run("--validate-only", env={"POLARIS_DT__GRPC__PORT": "not-a-port"})
    assert r.returncode == 2 and "digital_twin.grpc.port" in r.stderr


def test_health_check_of_nothing_running_fails() -> None:
    r = run("--health-check", "--target", f"127.0.0.1:{free_port()}", "--timeout", "1")
    assert r.returncode == 1
    assert "UNHEALTHY" in r.stdout


def _health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        return (
            health_pb2_grpc.HealthStub(ch)
            .Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            .status
        )


def test_one_command_runs_a_twin_with_embedded_nats_then_sigterm_drains_and_exits_zero(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "twin.log"
    proc = subprocess.Popen(
        [*CLI, "--grpc-port", str(port), "--grpc-host", "127.0.0.1", "--demo-load", "500"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        deadline = time.time() + 30
        status = None
        while time.time() < deadline:
            try:
                status = _health(port)
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.SERVING, log.read_text()
        r = run("--health-check", "--target", f"127.0.0.1:{port}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "status: healthy" in r.stdout
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "shutting down" in text and "stopped (events applied:" in text
    applied = int(text.rsplit("stopped (events applied: ", 1)[1].split(")")[0])
    assert applied > 0


def test_logs_go_to_the_configured_file_as_json_lines(tmp_path: Path) -> None:
    import json

    log_file = tmp_path / "logs" / "twin.log"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"digital_twin:\n  grpc:\n    host: 127.0.0.1\n    port: {free_port()}\n  debugging:\n    "
        f"log_file: {log_file}\n    log_to_console: false\n    log_format: json\n"
    )
    proc = subprocess.Popen(
        [*CLI, "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not (
            log_file.exists() and "digital twin ready" in log_file.read_text()
        ):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(rec["msg"].startswith("digital twin ready") for rec in lines)
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert proc.stderr is not None and "digital twin ready" not in proc.stderr.read()


def test_embedded_nats_server_survives_ctrl_c_until_drained_and_dies_with_a_killed_twin(
    tmp_path: Path,
) -> None:
    port = free_port()
    log = tmp_path / "twin.log"
    # Its own process group, like a shell job: Ctrl-C goes to the whole group.
    proc = subprocess.Popen(
        [*CLI, "--grpc-port", str(port), "--grpc-host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline and "digital twin ready" not in log.read_text():
            time.sleep(0.1)
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid), "nats-server"], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 1, log.read_text()
        nats_pid = int(children[0])
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert "NATS disconnected" not in log.read_text()
        deadline = time.time() + 10
        while time.time() < deadline and Path(f"/proc/{nats_pid}").exists():
            time.sleep(0.1)
        assert not Path(f"/proc/{nats_pid}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = subprocess.Popen(
        [*CLI, "--grpc-port", str(free_port()), "--grpc-host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline and "digital twin ready" not in log.read_text():
            time.sleep(0.1)
        nats_pid = int(
            subprocess.run(
                ["pgrep", "-P", str(proc.pid), "nats-server"], capture_output=True, text=True
            ).stdout.split()[0]
        )
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.time() + 10
        while (
            time.time() < deadline
            and Path(f"/proc/{nats_pid}").exists()
            and "zombie" not in Path(f"/proc/{nats_pid}/status").read_text().lower()
        ):
            time.sleep(0.1)
        status = (
            Path(f"/proc/{nats_pid}/status").read_text().lower()
            if Path(f"/proc/{nats_pid}").exists()
            else "gone"
        )
        assert status == "gone" or "zombie" in status
    finally:
        if proc.poll() is None:
            proc.kill()
