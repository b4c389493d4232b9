"""``polaris-twin``: run a digital twin, or one of its tools.

    polaris-twin [run] [--config FILE] [--world-model NAME] ...   run the twin (the default)
    polaris-twin validate [--config FILE]                         check the configuration
    polaris-twin health [--target HOST:PORT]                      ask a running twin
    polaris-twin load --telemetry-rate 100 --duration 300         load generator
    polaris-twin top                                              live monitor
    polaris-twin verify [--world-model M | --target HOST:PORT]    end-to-end check
    polaris-twin eval nab|rca ...                                 evaluations

The seed's spellings keep working: options without a command run the twin, and
``--validate-only`` / ``--health-check`` are ``validate`` / ``health``. Heavy libraries
load lazily so ``--help``, ``validate`` and ``health`` are instant. Common mistakes end
in one line and an exit code, not a traceback: a port in use names its setting (2), an
unreachable NATS for ``load`` says so (1).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import sys
from collections.abc import Callable
from typing import Any

from twin import __version__

MODELS = ("mock", "statistical", "gemini", "hybrid")
EXIT_USAGE = 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default unless its help already says it (or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


# ---------------------------------------------------------------- parsers


def _config_options(p: argparse.ArgumentParser) -> None:
    """Options every twin-config command shares (run, validate, health)."""
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config (the seed's digital_twin: section); default: built-in defaults",
    )
    p.add_argument(
        "--world-model",
        help=f"world model implementation ({', '.join(MODELS)} or a plugin); overrides the config",
    )
    p.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="overrides debugging.log_level",
    )
    p.add_argument("--log-format", choices=("text", "json"), help="overrides debugging.log_format")
    p.add_argument("--grpc-host", help="overrides grpc.host")
    p.add_argument("--grpc-port", type=int, help="overrides grpc.port (0 = any free port)")
    p.add_argument(
        "--nats-url",
        help="overrides nats.url; without any URL the twin starts an embedded nats-server",
    )
    p.add_argument(
        "--http-port",
        type=int,
        help="REST/JSON gateway, SSE and web console port (overrides http.port; 0 = off, -1 = any "
             "free port)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="Prometheus /metrics port (overrides telemetry.metrics_port)",
    )


def _health_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target", help="HOST:PORT of the twin to ask (default: from the config, loopback)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="health check timeout in seconds")


def _run_options(p: argparse.ArgumentParser) -> None:
    _config_options(p)
    p.add_argument(
        "--demo-load",
        type=float,
        metavar="EVENTS_PER_SEC",
        default=0.0,
        help="also publish SWIM-like telemetry at this rate (a demo with data)",
    )
    p.add_argument(
        "--validate-only",
        action="store_true",
        help="same as 'polaris-twin validate' (the seed's spelling)",
    )
    p.add_argument(
        "--health-check",
        action="store_true",
        help="same as 'polaris-twin health' (the seed's spelling)",
    )
    _health_options(p)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line: one sub-parser per command, each with its own --help.

    Only ``command``'s options are built (all when None): the tools' modules then load
    only when they run, which keeps ``validate`` and ``health`` instant.
    """
    p = argparse.ArgumentParser(
        prog="polaris-twin",
        description="POLARIS Digital Twin: NATS telemetry in, world-model answers over gRPC out.",
        epilog="Without a command the twin runs: 'polaris-twin --world-model statistical' is "
        "'polaris-twin run --world-model statistical'. 'polaris-twin COMMAND --help' shows a "
        "command's options.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"polaris-twin {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (text, configure) in _COMMAND_PARSERS.items():
        cp = sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)
        if command is None or command == name:
            configure(cp)
    return p


def _configure_health(p: argparse.ArgumentParser) -> None:
    _config_options(p)
    _health_options(p)


def _configure_load(p: argparse.ArgumentParser) -> None:
    from twin.tools import loadgen

    loadgen.configure_parser(p)


def _configure_top(p: argparse.ArgumentParser) -> None:
    from twin.tools import monitor

    monitor.configure_parser(p)


def _configure_verify(p: argparse.ArgumentParser) -> None:
    from twin.tools import verify

    verify.configure_parser(p)


def _configure_eval(p: argparse.ArgumentParser) -> None:
    from twin.evaluation import nab, rca

    what = p.add_subparsers(dest="what", required=True, metavar="WHAT", title="evaluations")
    nab.configure_parser(
        what.add_parser(
            "nab",
            help="Numenta Anomaly Benchmark score of the streaming detector",
            formatter_class=HelpFormatter,
        )
    )
    rca.configure_parser(
        what.add_parser(
            "rca",
            help="root-cause diagnosis accuracy on labelled incidents",
            formatter_class=HelpFormatter,
        )
    )


_COMMAND_PARSERS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": (
        "run a twin: gRPC service, NATS ingestion, the world model (the default)",
        _run_options,
    ),
    "validate": (
        "validate the configuration, print every error with its path, exit",
        _config_options,
    ),
    "health": (
        "ask a running twin (grpc.health.v1 + Manage health_check); exit 0 if healthy",
        _configure_health,
    ),
    "load": ("publish SWIM-like telemetry to NATS (a load generator)", _configure_load),
    "top": (
        "live view of a running twin: throughput, queue, dead letters, latencies",
        _configure_top,
    ),
    "verify": ("end-to-end check of a running (or an in-process) twin", _configure_verify),
    "eval": ("evaluations that drive the serving code in process", _configure_eval),
}
COMMANDS = tuple(_COMMAND_PARSERS)


def _with_command(argv: list[str]) -> list[str]:
    """``argv`` with ``run`` in front when it starts with options only (the seed's form)."""
    if not argv:
        return ["run"]
    first = argv[0]
    if first.startswith("-") and first not in ("-h", "--help", "--version"):
        return ["run", *argv]
    return argv


def _unknown_command(word: str) -> int:
    near = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.5)
    hint = f"; did you mean '{near[0]}'?" if near else f"; commands: {', '.join(COMMANDS)}"
    print(f"polaris-twin: unknown command '{word}'{hint}", file=sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------- commands


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    dt: dict[str, Any] = {}
    if getattr(args, "world_model", None):
        dt.setdefault("world_model", {})["implementation"] = args.world_model
    if getattr(args, "log_level", None):
        dt.setdefault("debugging", {})["log_level"] = args.log_level
    if getattr(args, "log_format", None):
        dt.setdefault("debugging", {})["log_format"] = args.log_format
    if getattr(args, "grpc_host", None):
        dt.setdefault("grpc", {})["host"] = args.grpc_host
    if getattr(args, "grpc_port", None) is not None:
        dt.setdefault("grpc", {})["port"] = args.grpc_port
    if getattr(args, "nats_url", None):
        dt.setdefault("nats", {})["url"] = args.nats_url
    if getattr(args, "http_port", None) is not None:
        dt.setdefault("http", {})["port"] = args.http_port
    if getattr(args, "metrics_port", None) is not None:
        dt.setdefault("telemetry", {})["metrics_port"] = args.metrics_port
    return {"digital_twin": dt} if dt else {}


def validate(args: argparse.Namespace) -> int:
    from twin.core.config import build_config, validate_config
    from twin.core.errors import ConfigError, ModelError

    try:
        cfg = build_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"configuration invalid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    errors = validate_config(cfg)
    if not errors:
        from twin.core.config import TwinConfig
        from twin.models.registry import model_class

        tc = TwinConfig.from_dict(cfg)
        try:
            cls = model_class(tc.world_model.implementation)
            errors = [
                f"digital_twin.world_model: {e}"
                for e in cls.validate_settings(tc.world_model.settings, os.environ)
            ]
        except ModelError as exc:
            errors = [f"digital_twin.world_model.implementation: {exc}"]
    if errors:
        print(f"configuration invalid ({len(errors)} error(s)):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"configuration valid ({args.config or 'built-in defaults'})")
    return 0


def health_check(args: argparse.Namespace) -> int:
    from twin.core.config import load_config
    from twin.core.errors import ConfigError
    from twin.tools.health_check import check

    target = args.target
    if not target:
        try:
            cfg = load_config(args.config, _overrides(args))
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_USAGE
        host = cfg.grpc.host if cfg.grpc.host not in ("0.0.0.0", "::", "[::]", "") else "127.0.0.1"
        target = f"{host}:{cfg.grpc.port}"
    ok, report = check(target, args.timeout)
    print(report)
    print("HEALTHY" if ok else "UNHEALTHY")
    return 0 if ok else 1


def run_twin(args: argparse.Namespace) -> int:
    if args.validate_only:
        return validate(args)
    if args.health_check:
        return health_check(args)
    from twin.core.config import load_config
    from twin.core.errors import ConfigError, PortInUse, TwinError
    from twin.logging_setup import setup_logging

    try:
        cfg = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    setup_logging(cfg.debugging, args.log_level)

    async def main() -> int:
        from twin.app import TwinApp
        from twin.observability.setup import instrument_app

        app = TwinApp(cfg)
        shutdown_otel: Callable[[], None] = lambda: None  # noqa: E731
        if args.demo_load > 0:
            _add_demo_load(app, args.demo_load)
        try:
            shutdown_otel = instrument_app(app, cfg)
            return await app.run()
        except PortInUse as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except TwinError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            shutdown_otel()

    return asyncio.run(main())


def _add_demo_load(app: Any, rate: float) -> None:
    """Publishes SWIM-like telemetry into the twin's own NATS once it is up."""
    demo: list[asyncio.Task[int]] = []

    def start_demo(a: Any) -> None:
        from twin.tools.loadgen import configure_parser
        from twin.tools.loadgen import run as run_load

        lp = argparse.ArgumentParser()
        configure_parser(lp)
        largs = lp.parse_args(
            [
                "--nats-url",
                a.nats_url or "",
                "--telemetry-rate",
                str(rate),
                "--duration",
                "1e9",
                "--quiet",
                "--realtime-clock",
            ]
        )
        demo.append(asyncio.create_task(run_load(largs), name="demo-load"))

    async def stop_demo() -> None:
        for task in demo:
            task.cancel()
        await asyncio.gather(*demo, return_exceptions=True)

    app.on_started.append(start_demo)
    app.on_stopping.append(stop_demo)


def _load(args: argparse.Namespace) -> int:
    from twin.tools.loadgen import run

    return asyncio.run(run(args))


def _top(args: argparse.Namespace) -> int:
    from twin.tools.monitor import run

    return run(args)


def _verify(args: argparse.Namespace) -> int:
    from twin.tools.verify import run

    return asyncio.run(run(args))


def _eval(args: argparse.Namespace) -> int:
    from twin.evaluation import nab, rca

    return int((nab.run if args.what == "nab" else rca.run)(args))


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": run_twin,
    "validate": validate,
    "health": health_check,
    "load": _load,
    "top": _top,
    "verify": _verify,
    "eval": _eval,
}


def main(argv: list[str] | None = None) -> int:
    # gRPC's C core logs to stderr on its own (bind failures, fork notes); the twin
    # reports what matters itself. GRPC_VERBOSITY=ERROR (or DEBUG) brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    argv = _with_command(list(sys.argv[1:] if argv is None else argv))
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        return _unknown_command(argv[0])
    command = argv[0] if argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    return HANDLERS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
