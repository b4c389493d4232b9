"""``polaris-twin``: run a digital twin, or one of its tools.

    polaris-twin [--config FILE] [--world-model NAME] [--log-level L] ...   run the twin
    polaris-twin --validate-only [--config FILE]                            check config
    polaris-twin --health-check [--target HOST:PORT]                        ask a running twin
    polaris-twin load --telemetry-rate 100 --duration 300                   load generator
    polaris-twin top                                                        live monitor
    polaris-twin verify [--world-model M | --target HOST:PORT]               end-to-end check
    polaris-twin eval nab|rca ...                                           evaluations

Flags mirror the seed's ``start_digital_twin.py``. Heavy libraries load lazily so
``--help``, ``--validate-only`` and ``--health-check`` are instant.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from twin import __version__

MODELS = ("mock", "statistical", "gemini", "hybrid")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polaris-twin",
        description="POLARIS Digital Twin: NATS telemetry in, world-model answers over gRPC out.",
        epilog="Subcommands: load (load generator), top (live monitor), verify (end-to-end check), eval nab|rca (evaluations). "
        "Run 'polaris-twin SUBCOMMAND --help' for theirs.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config (the seed's digital_twin: section); default: built-in defaults")
    p.add_argument("--world-model", help=f"world model implementation ({', '.join(MODELS)} or a plugin); overrides the config")
    p.add_argument("--validate-only", action="store_true", help="validate the configuration, print every error with its path, exit")
    p.add_argument("--health-check", action="store_true", help="ask a running twin (grpc.health.v1 + Manage health_check); exit 0 if healthy")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), help="overrides debugging.log_level")
    p.add_argument("--log-format", choices=("text", "json"), help="overrides debugging.log_format")
    p.add_argument("--grpc-host", help="overrides grpc.host")
    p.add_argument("--grpc-port", type=int, help="overrides grpc.port (0 = any free port)")
    p.add_argument("--nats-url", help="overrides nats.url; without any URL the twin starts an embedded nats-server")
    p.add_argument("--http-port", type=int, help="REST/JSON gateway, SSE and web console port (overrides http.port; 0 = off, -1 = any free port)")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (overrides telemetry.metrics_port)")
    p.add_argument("--target", help="HOST:PORT for --health-check (default: from the config, loopback)")
    p.add_argument("--timeout", type=float, default=5.0, help="--health-check timeout in seconds")
    p.add_argument("--demo-load", type=float, metavar="EVENTS_PER_SEC", default=0.0, help="also publish SWIM-like telemetry at this rate (a demo with data)")
    p.add_argument("--version", action="version", version=f"polaris-twin {__version__}")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    dt: dict[str, Any] = {}
    if args.world_model:
        dt.setdefault("world_model", {})["implementation"] = args.world_model
    if args.log_level:
        dt.setdefault("debugging", {})["log_level"] = args.log_level
    if args.log_format:
        dt.setdefault("debugging", {})["log_format"] = args.log_format
    if args.grpc_host:
        dt.setdefault("grpc", {})["host"] = args.grpc_host
    if args.grpc_port is not None:
        dt.setdefault("grpc", {})["port"] = args.grpc_port
    if args.nats_url:
        dt.setdefault("nats", {})["url"] = args.nats_url
    if args.http_port is not None:
        dt.setdefault("http", {})["port"] = args.http_port
    if args.metrics_port is not None:
        dt.setdefault("telemetry", {})["metrics_port"] = args.metrics_port
    return {"digital_twin": dt} if dt else {}


def validate(args: argparse.Namespace) -> int:
    from twin.core.config import build_config, validate_config
    from twin.core.errors import ConfigError, ModelError

    try:
        cfg = build_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"configuration invalid: {exc}", file=sys.stderr)
        return 2
    errors = validate_config(cfg)
    if not errors:
        from twin.core.config import TwinConfig
        from twin.models.registry import model_class

        tc = TwinConfig.from_dict(cfg)
        try:
            cls = model_class(tc.world_model.implementation)
            errors = [f"digital_twin.world_model: {e}" for e in cls.validate_settings(tc.world_model.settings, os.environ)]
        except ModelError as exc:
            errors = [f"digital_twin.world_model.implementation: {exc}"]
    if errors:
        print(f"configuration invalid ({len(errors)} error(s)):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 2
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
            return 2
        host = cfg.grpc.host if cfg.grpc.host not in ("0.0.0.0", "::", "[::]", "") else "127.0.0.1"
        target = f"{host}:{cfg.grpc.port}"
    ok, report = check(target, args.timeout)
    print(report)
    print("HEALTHY" if ok else "UNHEALTHY")
    return 0 if ok else 1


def run_twin(args: argparse.Namespace) -> int:
    from twin.core.config import load_config
    from twin.core.errors import ConfigError, TwinError
    from twin.logging_setup import setup_logging

    try:
        cfg = load_config(args.config, _overrides(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(cfg.debugging, args.log_level)

    async def main() -> int:
        from twin.app import TwinApp
        from twin.observability.setup import instrument_app

        app = TwinApp(cfg)
        shutdown_otel = instrument_app(app, cfg)
        demo: asyncio.Task[int] | None = None
        if args.demo_load > 0:

            def start_demo(a: TwinApp) -> None:
                nonlocal demo
                from twin.tools.loadgen import configure_parser
                from twin.tools.loadgen import run as run_load

                lp = argparse.ArgumentParser()
                configure_parser(lp)
                largs = lp.parse_args(["--nats-url", a.nats_url or "", "--telemetry-rate", str(args.demo_load), "--duration", "1e9", "--quiet", "--realtime-clock"])
                demo = asyncio.create_task(run_load(largs), name="demo-load")

            async def stop_demo() -> None:
                if demo is not None:
                    demo.cancel()
                    await asyncio.gather(demo, return_exceptions=True)

            app.on_started.append(start_demo)
            app.on_stopping.append(stop_demo)
        try:
            return await app.run()
        except TwinError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            shutdown_otel()

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "load":
        from twin.tools.loadgen import main as load_main

        return load_main(argv[1:])
    if argv and argv[0] == "top":
        from twin.tools.monitor import main as top_main

        return top_main(argv[1:])
    if argv and argv[0] == "verify":
        from twin.tools.verify import main as verify_main

        return verify_main(argv[1:])
    if argv and argv[0] == "eval":
        return _eval(argv[1:])
    args = _run_parser().parse_args(argv)
    if args.validate_only:
        return validate(args)
    if args.health_check:
        return health_check(args)
    return run_twin(args)


def _eval(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="polaris-twin eval", description="Evaluations that drive the serving code in process.")
    sub = p.add_subparsers(dest="what", required=True)
    from twin.evaluation import nab, rca

    nab.configure_parser(sub.add_parser("nab", help="Numenta Anomaly Benchmark score of the streaming detector"))
    rca.configure_parser(sub.add_parser("rca", help="root-cause diagnosis accuracy on labelled incidents"))
    args = p.parse_args(argv)
    return int((nab.run if args.what == "nab" else rca.run)(args))


if __name__ == "__main__":
    raise SystemExit(main())
