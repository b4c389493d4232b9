"""What a user sees of the package: the licence it declares is the one it ships, and the
metadata an index shows (authors, links, classifiers) is there."""

from __future__ import annotations

from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_declared_licence_is_the_shipped_one() -> None:
    meta = metadata("polaris-digital-twin")
    assert meta["License-Expression"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_index_metadata_is_complete() -> None:
    meta = metadata("polaris-digital-twin")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Documentation", "Issues"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())
    assert meta["Author"] or meta["Author-email"]
    classifiers = meta.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.11") for c in classifiers)
