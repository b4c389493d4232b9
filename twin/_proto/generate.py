"""Regenerates the committed gRPC stubs from ``proto/digital_twin.proto``.

The stubs are committed (so a plain ``pip install`` needs no protoc) and
``tests/service/test_proto_stubs.py`` fails when they are stale. The virtual
include path ``twin/_proto=proto`` makes protoc emit package-absolute imports.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "digital_twin.proto"
OUT = ROOT / "twin" / "_proto"
GENERATED = ("digital_twin_pb2.py", "digital_twin_pb2.pyi", "digital_twin_pb2_grpc.py")


def generate(out_dir: Path) -> None:
    from importlib import resources

    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-Itwin/_proto={PROTO.parent}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"twin/_proto/{PROTO.name}",
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def render() -> dict[str, str]:
    """Generates into a temp dir and returns {file name: text}."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        base = Path(tmp) / "twin" / "_proto"
        return {name: (base / name).read_text() for name in GENERATED}


def main() -> int:
    for name, text in render().items():
        (OUT / name).write_text(text)
    print(f"wrote {', '.join(GENERATED)} to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
