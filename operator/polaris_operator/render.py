"""``polaris-twin-operator render -f twin.yaml``: the manifests the operator would apply.

For GitOps review and debugging, as ``helm template`` is for charts. The same code path
as the operator: the file's DigitalTwins are defaulted as the API server would (the CRD
shipped in the package), then ``builders.build_children`` renders each; a spec the
operator cannot honour fails with exactly the message the operator writes into the twin's
``Ready`` condition. What only the cluster knows is left out and said so: the owner
reference (the twin's uid) and the status.

Exit codes: 0 rendered, 1 an invalid spec, 2 unusable input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from .builders import API_GROUP, KIND, SpecError, build_children
from .crd import apply_defaults

__all__ = ["main", "render_documents"]

IMAGE_ENV = "POLARIS_TWIN_IMAGE"


class InputError(ValueError):
    """The file holds no DigitalTwin, or not YAML."""


def _twins(text: str, source: str) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        raise InputError(f"{source} is not valid YAML: {e}") from e
    twins = [
        d
        for d in docs
        if isinstance(d, dict)
        and d.get("kind") == KIND
        and str(d.get("apiVersion", "")).startswith(f"{API_GROUP}/")
    ]
    if not twins:
        raise InputError(f"{source} holds no {API_GROUP} {KIND}")
    return twins


def render_documents(
    twins: Sequence[dict[str, Any]], *, default_image: str, namespace: str | None = None
) -> list[dict[str, Any]]:
    """Every child of every DigitalTwin, in the operator's apply order.

    Raises:
        SpecError: the first twin the operator would refuse (message as in its status).
    """
    out: list[dict[str, Any]] = []
    for raw in twins:
        dt = apply_defaults(raw)
        meta = dt.setdefault("metadata", {})
        meta["namespace"] = namespace or meta.get("namespace") or "default"
        try:
            _, children = build_children(dt, default_image=default_image)
        except SpecError as e:
            raise SpecError(f"DigitalTwin {meta['namespace']}/{meta.get('name')}: {e}") from e
        out.extend(children)
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the rendered config file) as literal blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(docs: Sequence[dict[str, Any]], source: str, out: TextIO) -> None:
    out.write(
        f"# Rendered by polaris-twin-operator from {source}. In the cluster the operator also\n"
        "# sets each object's ownerReferences to its DigitalTwin (whose uid only the API\n"
        "# server knows), and writes the twin's status.\n"
    )
    for doc in docs:
        out.write("---\n")
        out.write(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False))


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr
) -> int:
    p = argparse.ArgumentParser(
        prog="polaris-twin-operator render",
        description="Print the manifests the operator would apply for DigitalTwin files.",
    )
    p.add_argument("-f", "--filename", required=True, help="DigitalTwin YAML file; - for stdin.")
    p.add_argument(
        "--image",
        default=os.environ.get(IMAGE_ENV, ""),
        help=f"Default twin image for twins without spec.image (env {IMAGE_ENV}).",
    )
    p.add_argument("-n", "--namespace", help="Namespace (default: the file's, else default).")
    args = p.parse_args(argv)
    source = "stdin" if args.filename == "-" else args.filename
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
        docs = render_documents(
            _twins(text, source), default_image=args.image, namespace=args.namespace
        )
    except OSError as e:
        print(f"error: cannot read {source}: {e.strerror or e}", file=stderr)
        return 2
    except InputError as e:
        print(f"error: {e}", file=stderr)
        return 2
    except SpecError as e:
        print(f"InvalidSpec: {e}", file=stderr)
        if not args.image and "default twin image" in str(e):
            print(f"hint: pass --image (the operator's {IMAGE_ENV})", file=stderr)
        return 1
    try:
        _dump(docs, source, stdout)
    except BrokenPipeError:  # e.g. piped into head
        return 0
    return 0
