"""QLoRA's quantized base and the precision a node computes in.

- `check_runtime(quantize, precision, device)` refuses, with one-line `ModelError`s
  and before any model loads, what this machine cannot run: a quantized base without
  CUDA or without the `bitsandbytes` package (the `qlora` extra), fp16 off CUDA;
- `quantization_kwargs(quantize)` are the `BitsAndBytesConfig` arguments (4-bit with
  the quant type, bf16 compute and double quantization; or 8-bit), built without
  importing bitsandbytes;
- `load_quantized` loads a pretrained base through bitsandbytes onto one CUDA device
  and prepares it for k-bit training (peft's `prepare_model_for_kbit_training`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from declora.node.model_source import ModelError

QUANTIZE = ("none", "nf4", "fp4", "int8")
PRECISIONS = ("fp32", "bf16", "fp16")


def check_runtime(quantize: str, precision: str, device: str) -> None:
    """Raise ModelError if this machine cannot run `quantize` / `precision` on `device`."""
    if quantize not in QUANTIZE:
        raise ModelError(
            f"--quantize {quantize}: expected one of {', '.join(QUANTIZE)}",
            "give --quantize none unless the node has a CUDA GPU",
        )
    if precision not in PRECISIONS:
        raise ModelError(
            f"--precision {precision}: expected one of {', '.join(PRECISIONS)}",
            "give --precision fp32 (bf16 on a recent GPU)",
        )
    cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
    if quantize != "none":
        if not cuda:
            raise ModelError(
                f"--quantize {quantize} needs a CUDA GPU (bitsandbytes); this node runs on "
                f"{device}: use --quantize none"
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ModelError(
                f"--quantize {quantize} needs the bitsandbytes package: "
                "pip install 'declora[qlora]'"
            )
    if precision == "fp16" and not cuda:
        raise ModelError(
            f"--precision fp16 needs a CUDA GPU; this node runs on {device}: use bf16 or fp32"
        )


def quantization_kwargs(quantize: str) -> dict[str, Any]:
    """The `BitsAndBytesConfig` arguments of a quantized base ({} for none)."""
    if quantize == "none":
        return {}
    if quantize == "int8":
        return {"load_in_8bit": True}
    if quantize in ("nf4", "fp4"):
        return {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": quantize,
            "bnb_4bit_compute_dtype": torch.bfloat16,
            "bnb_4bit_use_double_quant": True,
        }
    raise ModelError(f"--quantize {quantize}: expected one of {', '.join(QUANTIZE)}")


def load_quantized(
    model_class: Any, path: str, quantize: str, device: str, **kw: Any
) -> tuple[Any, dict[str, Any]]:
    """A pretrained base loaded in `quantize` onto CUDA `device`, ready for k-bit LoRA,
    and transformers' loading report (`missing_keys`: weights its files lack)."""
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    index = torch.device(device).index or 0
    model, info = model_class.from_pretrained(
        path,
        quantization_config=BitsAndBytesConfig(**quantization_kwargs(quantize)),
        device_map={"": index},
        output_loading_info=True,
        **kw,
    )
    # checkpointing is the recipe's choice (`gradient_checkpointing`), made later
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), info
