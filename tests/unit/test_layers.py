"""Imports point down the layers: api and store know nothing of the server, nor each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "evroc_compute"

# layer -> the layers it may import (besides itself)
ALLOWED = {
    "api": set(),
    "store": set(),
    "server": {"api", "store"},
    "client": {"api", "server"},  # the in-process client is the one door into the server
    "controllers": {"api", "client", "scheduler"},  # never the server or the store
    "scheduler": {"api"},
    "hosts": {"api", "client", "controllers"},  # agents and drivers, below the cloud wiring
}


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "evroc_compute" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_layers_below(layer: str) -> None:
    offending = {}
    for path in (PACKAGE / layer).rglob("*.py"):
        wrong = imported_layers(path) - ALLOWED[layer] - {layer, "__init__"}
        wrong.discard(path.stem)
        if wrong - {"__version__"}:
            offending[str(path.relative_to(PACKAGE))] = sorted(wrong)
    assert not offending, f"{layer} imports layers above it: {offending}"
