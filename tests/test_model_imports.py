"""node/models.py builds on node/model_source.py, never the other way: the model names
and ModelError live in model_source, and are imported from there only, so both import
at the top, and finding a model imports neither torch nor models."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from declora.node import embedded_llm, model_source, models

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("EMBEDDED_LLM", "EMBEDDED_MODEL", "HUB_IDS", "TINY_MODELS", "ModelError")


def loaded_after(module: str) -> set[str]:
    """The declora modules and torch that importing `module` alone loads."""
    code = (
        f"import sys, {module}; "
        "print(' '.join(m for m in sys.modules if m == 'torch' or m.startswith('declora.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_shared_names_are_imported_from_model_source_only() -> None:
    assert model_source.ModelError.__module__ == model_source.__name__
    wrong = []
    for folder in ("node", "cli", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "declora.node.models":
                    wrong += [f"{path.name}: {a.name}" for a in node.names if a.name in SHARED]
    assert not wrong  # one place to import each name from
    assert embedded_llm.ModelError is model_source.ModelError
    assert models.find_model is model_source.find_model  # imported at the top


def test_model_source_loads_without_models_and_models_loads_it_at_once() -> None:
    alone = loaded_after("declora.node.model_source")
    assert "declora.node.models" not in alone and "torch" not in alone
    assert "declora.node.model_source" in loaded_after("declora.node.models")
