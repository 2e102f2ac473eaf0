"""How PEFT names LoRA parameters: the one place these spellings live.

Every LoRA parameter of a PEFT model holds `LORA_MARK` in its name, right after the
path of the module it adapts: the factors `<module>.lora_A.<adapter>.weight` and
`<module>.lora_B.<adapter>.weight`, and with DoRA `<module>.lora_magnitude_vector.
<adapter>.weight`. No other parameter's name holds it. Nothing here imports torch.
"""

from __future__ import annotations

LORA_MARK = ".lora_"
A_MARK = LORA_MARK + "A."  # the A factors (r x in)
B_MARK = LORA_MARK + "B."  # the B factors (out x r)


def lora_module(name: str) -> str | None:
    """The path of the module the LoRA parameter `name` adapts; None for any other
    parameter (a classification head, a frozen base weight)."""
    module, mark, _ = name.partition(LORA_MARK)
    return module if mark else None
