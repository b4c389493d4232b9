"""The `polaris-twin` subcommands and their answers to common mistakes (real subprocesses)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

import pytest

from twin.cli import COMMANDS, build_parser

CLI = [sys.executable, "-m", "twin.cli"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    out: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(f"{name} {n}".strip(), a) for n, a in _actions(sub)]
        else:
            out.append(("", action))
    return out


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{where} {'/'.join(a.option_strings)}"
        for where, a in _actions(build_parser())
        if a.option_strings and not (a.help or "").strip()
    ]
    assert missing == []


def test_help_shows_defaults() -> None:
    r = run("load", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())  # argparse wraps to the terminal width
    assert "events per second (default: 100.0)" in text
    assert "(default: polaris.telemetry.events.stream)" in text


def test_top_level_help_lists_every_command() -> None:
    r = run("--help")
    assert r.returncode == 0
    for command in COMMANDS:
        assert f"    {command} " in r.stdout, command


def test_a_misspelt_command_gets_a_suggestion_and_exit_2() -> None:
    r = run("tpo")
    assert r.returncode == 2
    assert "unknown command 'tpo'; did you mean 'top'?" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_is_the_seeds_validate_only() -> None:
    new, old = (
        run("validate", "--world-model", "crystal_ball"),
        run("--validate-only", "--world-model", "crystal_ball"),
    )
    assert new.returncode == old.returncode == 2
    assert "unknown world model 'crystal_ball'" in new.stderr
    assert new.stderr == old.stderr


def test_health_is_the_seeds_health_check() -> None:
    target = f"127.0.0.1:{free_port()}"
    new = run("health", "--target", target, "--timeout", "1")
    old = run("--health-check", "--target", target, "--timeout", "1")
    assert new.returncode == old.returncode == 1
    assert "UNHEALTHY" in new.stdout and "UNHEALTHY" in old.stdout


@pytest.mark.parametrize(
    ("flag", "setting"),
    [("--grpc-port", "grpc.port"), ("--metrics-port", "telemetry.metrics_port")],
)
def test_a_port_in_use_names_its_setting_and_exits_2(flag: str, setting: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = ["run", "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--log-level", "WARNING"]
        args += [flag, port] if flag != "--grpc-port" else ["--grpc-port", port]
        r = run(*args)
    assert r.returncode == 2, r.stderr
    assert f"{setting}: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert flag in r.stderr
    assert "Traceback" not in r.stderr
    assert "add_port.cc" not in r.stderr  # gRPC C-core logging stays off the console


def test_load_without_nats_says_so_and_exits_1() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    r = run("load", "--nats-url", url, "--duration", "1", "--quiet")
    assert r.returncode == 1
    assert f"cannot reach NATS at {url}" in r.stderr
    assert "Traceback" not in r.stderr
