"""How PEFT names LoRA parameters: the one place these spellings live.

Every LoRA parameter of a PEFT model holds `LORA_MARK` in its name, right after the
path of the module it adapts: the factors `<module>.lora_A.<adapter>.weight` and
`<module>.lora_B.<adapter>.weight`, and with DoRA `<module>.lora_magnitude_vector.
<adapter>.weight`; an adapted embedding holds its factors as bare parameters,
`<module>.lora_embedding_A.<adapter>` (r x vocab) and `<module>.lora_embedding_B.
<adapter>` (dim x r). No other parameter's name holds it. Nothing here imports torch.

`saved_name` is the key PEFT writes for a parameter in adapter_model.safetensors
(`PeftModel.save_pretrained`): the adapter's name dropped (`.default` at the end, or
before the last part), a `modules_to_save` copy under the module's own name, and a DoRA
magnitude without its `.weight` (PEFT keeps the key of its older format).
"""

from __future__ import annotations

LORA_MARK = ".lora_"
A_MARK = LORA_MARK + "A."  # the A factors (r x in)
B_MARK = LORA_MARK + "B."  # the B factors (out x r)
EMBEDDING_A_MARK = LORA_MARK + "embedding_A."  # an embedding's A factor (r x vocab)
EMBEDDING_B_MARK = LORA_MARK + "embedding_B."  # an embedding's B factor (dim x r)
MAGNITUDE = LORA_MARK + "magnitude_vector"  # DoRA's magnitude, one per adapted module
ADAPTER = "default"  # the name PEFT gives the one adapter declora trains


def lora_module(name: str) -> str | None:
    """The path of the module the LoRA parameter `name` adapts; None for any other
    parameter (a classification head, a frozen base weight)."""
    module, mark, _ = name.partition(LORA_MARK)
    return module if mark else None


def saved_name(name: str, adapter: str = ADAPTER) -> str:
    """The key PEFT saves the parameter `name` (of `named_parameters()`) under."""
    if name.endswith("." + adapter):  # a bare parameter: an embedding's factors
        key = name.removesuffix("." + adapter)
    else:
        key = name.replace(f".{adapter}.", ".")
    key = key.replace(".modules_to_save.", ".")
    if key.endswith(MAGNITUDE + ".weight"):
        key = key.removesuffix(".weight")
    return key
