"""DeCAF's product-space mixing (arXiv 2505.21382): average B·A, refactorise to rank r.

Invariant callers rely on: for every LoRA module (A: r x in, B: out x r) of the
adapter vector, the mixed factors satisfy

    B' A' = the best rank-r approximation (Frobenius) of  sum_j w_j B_j A_j

over the node itself (weight w_self = 1 - sum of the neighbours' weights, its own
exact factors) and its neighbours (their public copies). The dense out x in matrix is
never formed: QR of the stacked weighted B's (out x m·r) and of the stacked A's
transposed (in x m·r), the SVD of the small product of the two R factors, the top r
singular triplets kept, and sqrt(S) put into each factor (B' = Q_B U sqrt(S),
A' = sqrt(S) V^T Q_A^T, a balanced split; the paper's text available here did not fix
the split, so this is our choice). Each singular pair's sign is fixed (the largest
|entry| of B's column positive), so with distinct singular values the factors depend
on the product only, not on the order the neighbours were stacked in: nodes that
agree on B·A agree on (B, A), and factor-space consensus still means consensus.

A module whose weighted sum is exactly zero (every B still at PEFT's zero init) keeps
this node's factors: B A = 0 already is the best approximation, and a zero A would
stop B from ever getting a gradient. Entries that are not LoRA factors (a
classification head) are left to the caller, which averages them as Dec-LoRA does.
Everything is computed in float64 and returned as float32. No I/O, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from declora.node.adapter import AdapterSchema
from declora.node.lora_names import A_MARK, B_MARK


@dataclass(frozen=True)
class LoraPair:
    """Where one module's A (r x in) and B (out x r) sit in the adapter vector."""

    a: slice
    a_shape: tuple[int, int]
    b: slice
    b_shape: tuple[int, int]


def lora_pairs(schema: AdapterSchema) -> tuple[LoraPair, ...]:
    """The LoRA modules of `schema`, each A matched with its B by name; ValueError if
    a factor has no partner (DeCAF needs both factors trainable)."""
    spans: dict[str, tuple[slice, tuple[int, ...]]] = {}
    offset = 0
    for t in schema.tensors:
        spans[t.name] = (slice(offset, offset + t.numel), t.shape)
        offset += t.numel
    pairs = []
    for name, (a, a_shape) in spans.items():
        if A_MARK not in name:
            continue
        partner = name.replace(A_MARK, B_MARK)
        if partner not in spans:
            raise ValueError(f"LoRA factor {name} has no trainable B ({partner})")
        b, b_shape = spans[partner]
        pairs.append(LoraPair(a, (a_shape[0], a_shape[1]), b, (b_shape[0], b_shape[1])))
    if sum(B_MARK in n for n in spans) != len(pairs):
        raise ValueError("a LoRA B factor has no trainable A: product mixing needs both")
    return tuple(pairs)


def refactorise(
    bs: Sequence[np.ndarray], as_: Sequence[np.ndarray], weights: Sequence[float], rank: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(B', A') with B' A' the best rank-`rank` approximation of sum_j w_j B_j A_j,
    without forming it; None when that sum is exactly zero."""
    weighted = [w * np.asarray(b, np.float64) for w, b in zip(weights, bs, strict=True)]
    b_stack = np.concatenate(weighted, axis=1)
    a_stack = np.concatenate([np.asarray(a, np.float64) for a in as_], axis=0)
    q_b, r_b = np.linalg.qr(b_stack)  # out x k, k x m·r
    q_a, r_a = np.linalg.qr(a_stack.T)  # in x k', k' x m·r
    u, s, vt = np.linalg.svd(r_b @ r_a.T)  # k x k'
    if s.size == 0 or s[0] == 0.0:
        return None
    root = np.sqrt(s[:rank])
    left, right = q_b @ u[:, :rank], vt[:rank] @ q_a.T
    # canonical signs (each left vector's largest |entry| positive): the factors are
    # then a function of the product alone, so nodes that agree on it agree on them
    peak = left[np.abs(left).argmax(axis=0), np.arange(left.shape[1])]
    flip = np.where(peak < 0, -1.0, 1.0)
    b_new = left * (flip * root)
    a_new = (flip * root)[:, None] * right
    if a_new.shape[0] < rank:  # fewer directions than the rank: pad with zeros
        b_new = np.pad(b_new, ((0, 0), (0, rank - b_new.shape[1])))
        a_new = np.pad(a_new, ((0, rank - a_new.shape[0]), (0, 0)))
    return b_new.astype(np.float32), a_new.astype(np.float32)


def product_mix(
    pairs: Sequence[LoraPair],
    own: np.ndarray,
    mixed: np.ndarray,
    neighbours: Sequence[tuple[float, np.ndarray]],
) -> np.ndarray:
    """`mixed` (the factor-wise mix, kept for non-LoRA entries) with every LoRA module
    replaced by the refactorised weighted sum of products of `own` (weight
    1 - sum of the neighbours' weights) and each neighbour's (weight, vector)."""
    out = np.array(mixed, dtype=np.float32, copy=True)
    weights = [1.0 - sum(w for w, _ in neighbours), *(w for w, _ in neighbours)]
    vectors = [own, *(v for _, v in neighbours)]
    for p in pairs:
        bs = [v[p.b].reshape(p.b_shape) for v in vectors]
        as_ = [v[p.a].reshape(p.a_shape) for v in vectors]
        got = refactorise(bs, as_, weights, p.a_shape[0])
        if got is None:
            out[p.a], out[p.b] = own[p.a], own[p.b]
        else:
            out[p.b], out[p.a] = got[0].reshape(-1), got[1].reshape(-1)
    return out


def product_average(pairs: Sequence[LoraPair], vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The swarm's averaged adapter in product space: every LoRA module refactorised
    from the mean of the nodes' B·A, every other entry the plain mean."""
    mean = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    share = 1.0 / len(vectors)
    return product_mix(pairs, vectors[0], mean, [(share, v) for v in vectors[1:]])
