"""node/models.py builds on node/model_source.py, never the other way: the model names
and ModelError live in model_source (models re-exports them, the same objects), so
both import at the top, and finding a model imports neither torch nor models."""

from __future__ import annotations

import subprocess
import sys

from declora.node import embedded_llm, model_source, models

SHARED = ("EMBEDDED_LLM", "EMBEDDED_MODEL", "HUB_IDS", "TINY_MODELS", "ModelError")


def loaded_after(module: str) -> set[str]:
    """The declora modules and torch that importing `module` alone loads."""
    code = (
        f"import sys, {module}; "
        "print(' '.join(m for m in sys.modules if m == 'torch' or m.startswith('declora.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_shared_names_are_model_sources_and_models_reexports_them() -> None:
    for name in SHARED:
        assert getattr(models, name) is getattr(model_source, name), name
    assert models.ModelError.__module__ == model_source.__name__
    assert embedded_llm.ModelError is model_source.ModelError
    assert models.find_model is model_source.find_model  # imported at the top


def test_model_source_loads_without_models_and_models_loads_it_at_once() -> None:
    alone = loaded_after("declora.node.model_source")
    assert "declora.node.models" not in alone and "torch" not in alone
    assert "declora.node.model_source" in loaded_after("declora.node.models")
