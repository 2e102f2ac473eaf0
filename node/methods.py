"""The decentralized fine-tuning methods a swarm can run (`--method`), and their rules.

- `dec-lora` (the default): every LoRA factor A and B (and a classification head)
  trains and is gossiped; mixing averages A and B separately with the same weights.
- `conlora`: A is frozen at the shared seeded init (identical on every node, so it is
  never sent); only B (and a head) trains and is gossiped. Mixing B then averages the
  update B·A exactly, and messages carry about half the values.
- `decaf`: factors train and are gossiped as in Dec-LoRA, but a node mixes in product
  space: sum_j w_ij B_j A_j, refactorised to rank r by a truncated SVD
  (`product_mixing.py`).
- `kill-revive`: DLoRA's Kill-and-Revive: each round only the LoRA modules whose
  update changed most train and are sent; the others are frozen, and revived
  periodically (`kill_revive.py`).
- `deca`: DECA's decentralized block-wise full fine-tuning: no LoRA; one block of
  consecutive transformer layers (and the classification head) trains with block-wise
  Adam and is gossiped at a time, the block cycling by the round number (`deca.py`,
  `deca_model.py`).

The method is part of the fingerprint (only when not the default, so Dec-LoRA's
fingerprints never changed) and of the recipe a Hello carries, so nodes running
different methods refuse each other naming `--method`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal

from declora.node.lora_names import A_MARK, EMBEDDING_A_MARK

if TYPE_CHECKING:
    from torch import nn

Method = Literal["dec-lora", "conlora", "decaf", "kill-revive", "deca"]
DEFAULT_METHOD: Method = "dec-lora"


Namer = Callable[[str], str]  # an option's field name -> how the user gave it


def flag(field: str) -> str:
    """`--field-name`: how a command-line flag names the option `field`."""
    return "--" + field.replace("_", "-")


# --deca-block-rounds a codec needs with DECA: at every block switch the public copies
# restart from the base, so a turn's first message carries the block's whole change,
# coarsely, and a turn too short to correct it leaves the finish above --consensus-tol.
# Measured (4 tiny-bert nodes, 2 blocks, 4 rounds, lr 0.05, tol 1e-3, 150 finish
# rounds): fp16 and bf16 agree with 1-round turns; q8 levels off at 7e-3 with 1, agrees
# with 2; q4 levels off at 0.06, 0.10, 0.02 with 2, 3, 4, agrees with 5 (the default)
# and 6; q2 stays above 0.3 with 12, topk:0.1 above 0.06 with 10 (both refused).
LOSSY_BLOCK_ROUNDS = {"q8": 2, "q4": 5}
NEVER_AGREE = ("q2", "topk")
DEFAULT_BLOCK_ROUNDS = 5  # --deca-block-rounds' default (recipe.py)
# the LoRA options DECA (full fine-tuning) has no use for, with their defaults: a DECA
# spec records them at these values (its fingerprint), so none may differ
LORA_DEFAULTS: dict[str, object] = {
    "rank": 8,
    "alpha": None,
    "targets": (),
    "lora_dropout": 0.0,
    "rslora": False,
    "dora": False,
}
DECA_DEFAULTS: dict[str, object] = {"deca_blocks": 0, "deca_block_rounds": DEFAULT_BLOCK_ROUNDS}


def combination_problem(
    method: str,
    codec: str,
    consensus_step: float | None,
    robust: str,
    tracking: bool,
    *,
    block_rounds: int = DEFAULT_BLOCK_ROUNDS,
    name: Namer = flag,
) -> str:
    """'' when `method` works with these mixing options, else the one-line reason, each
    option named by `name` (a field name -> how the user gave it: a flag by default).

    DeCAF refactorises the exact weighted sum of the neighbours' products: it needs
    exact public copies (fp32, gamma 1) and plain weights. CHOCO's gamma < 1 step and
    coarse codecs are linear corrections in factor space, robust rules clip factor
    distances, and tracking's correction lives in the factors' gauge, which every
    refactorisation changes; none of them has a product-space meaning, so they are
    refused rather than silently mixed. Kill-and-Revive mixes each module with the
    neighbours that sent it: robust rules assume every entry is mixed every round, so
    they are refused too (tracking works entry by entry: `kill_revive.py`). DECA's
    robust rules and tracking would need their state per block (reset at every block
    switch): refused; so are q2 and top-k, and q8 and q4 with `block_rounds` below
    `LOSSY_BLOCK_ROUNDS` (measured: the nodes would not come to agree).
    """
    m, c = f"{name('method')} {method}", name("codec")
    if method == "deca":
        if robust != "none":
            return f"{m} cannot be combined with {name('robust_mixing')}"
        if tracking:
            return f"{m} cannot be combined with {name('gradient_tracking')}"
        if codec.startswith(NEVER_AGREE):
            return (
                f"{m} cannot be combined with {c} {codec}: each block's turn restarts the "
                f"neighbours' copies coarse and its nodes do not come to agree (use {c} "
                "fp32, fp16, bf16, q8 or q4)"
            )
        least = max((n for q, n in LOSSY_BLOCK_ROUNDS.items() if codec.startswith(q)), default=1)
        if block_rounds < least:
            return (
                f"{m} with {c} {codec} needs {name('deca_block_rounds')} {least} or more, "
                f"not {block_rounds}: each block's turn restarts the neighbours' copies "
                f"coarse, and shorter turns leave the nodes apart (or use {c} fp32, fp16 "
                "or bf16)"
            )
        return ""
    if method == "kill-revive":
        if robust != "none":
            return f"{m} cannot be combined with {name('robust_mixing')}"
        return ""
    if method != "decaf":
        return ""
    if codec != "fp32":
        return f"{m} mixes exact products: it needs {c} fp32, not {codec}"
    if consensus_step not in (None, 1.0):
        step = name("consensus_step")
        return f"{m} needs {step} 1 (exact mixing), not {consensus_step}"
    if robust != "none":
        return f"{m} cannot be combined with {name('robust_mixing')} (it mixes products)"
    if tracking:
        return f"{m} cannot be combined with {name('gradient_tracking')} (it mixes products)"
    return ""


def ignored_options_problem(method: str, values: dict[str, object], name: Namer = flag) -> str:
    """'' unless an option `method` ignores is away from its default in `values` (field
    name -> value), else the one-line reason naming it by `name`: LoRA's options
    (`LORA_DEFAULTS`) with `deca`, which trains the base model's blocks, and DECA's
    (`DECA_DEFAULTS`) with any other method. Refused rather than ignored: DECA's
    fingerprint records the LoRA options, so ignoring them would still part its nodes."""
    ignored = LORA_DEFAULTS if method == "deca" else DECA_DEFAULTS
    for field, default in ignored.items():
        if field in values and values[field] != default:
            deca = method == "deca"
            what = (
                "it trains the base model's blocks, not LoRA" if deca else "it is for --method deca"
            )
            return f"{name(field)} has no effect with {name('method')} {method} ({what})"
    return ""


def gossip_steps_problem(method: str, exchanges_per_round: int, name: Namer = flag) -> str:
    """'' when `method` works with `exchanges_per_round` exchanges a training round,
    else the one-line reason. DECA moves to the next block by the round of its message
    (`deca.DecaNode.outgoing` counts them), so the gossip-only exchanges after a
    block's last training round would mix the next block instead: refused when given
    (`Recipe.fill_swarm_defaults` makes an unset `gossip_steps` 1 for it).
    Kill-and-Revive needs nothing: its revives go by the training round, and a
    gossip-only exchange sends every module, as in the consensus finish."""
    if method == "deca" and exchanges_per_round > 1:
        return (
            f"{name('method')} deca cannot be combined with {name('gossip_steps')} > 1 (its "
            "blocks switch by message count, not by training round)"
        )
    return ""


def embedding_problem(method: str, names: Iterable[str]) -> str:
    """'' when `method` works with the adapter's tensors `names`, else the reason:
    ConLoRA, DeCAF and Kill-and-Revive pair each linear layer's A and B factors
    (`A_MARK`), so an embedding's LoRA factors (`--targets embed_tokens`) would be left
    out of what they freeze, multiply or select."""
    if method not in ("conlora", "decaf", "kill-revive"):
        return ""
    embedded = sorted({n.partition(EMBEDDING_A_MARK)[0] for n in names if EMBEDDING_A_MARK in n})
    if not embedded:
        return ""
    return (
        f"--method {method} pairs the A and B factors of linear layers: it cannot adapt "
        f"the embedding {embedded[0]!r}"
    )


def freeze_lora_a(model: nn.Module) -> int:
    """Freeze every LoRA A factor of a PEFT model in place (ConLoRA); the count frozen.

    The frozen A stays a parameter of the model, so PEFT still saves it with the
    adapter; it is just no longer trainable, hence not in the adapter vector."""
    frozen = 0
    for name, p in model.named_parameters():
        if A_MARK in name:
            p.requires_grad_(False)
            frozen += 1
    return frozen
