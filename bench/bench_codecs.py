"""Encode + decode time of every codec on a 7B-Llama-sized LoRA delta.

The vector has 8,388,608 float32 values: LoRA r=16 on q and v of a 7B Llama
(32 layers x 2 modules x (4096*16 + 16*4096)). For each codec the script times
`codec.decode(codec.encode(x, rng))` (median of `--repeat` runs, after one warm-up)
and prints the payload size, the compression against fp32, the time, and that time
as a multiple of a plain `np.copyto` of the same vector measured in the same run.
Nothing is asserted; the figures depend on the machine and its load.

    python bench/bench_codecs.py --repeat 5
    python bench/bench_codecs.py --smoke       # 65,536 values, every codec, a second
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from benchlib import load_average, parse_args

from declora.node.codecs import Codec, encoded_size, make_codec

LAYERS, MODULES, HIDDEN, RANK = 32, 2, 4096, 16
N = LAYERS * MODULES * (HIDDEN * RANK + RANK * HIDDEN)  # 8,388,608
CODECS = ("fp32", "fp16", "bf16", "q8", "q4", "q2", "topk:0.01", "topk:0.01+q4")
SMOKE = {"n": 65_536, "repeat": 2}


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: page faults, first allocations
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_codec(codec: Codec, x: np.ndarray, repeat: int) -> tuple[float, int, float]:
    """(median encode+decode seconds, payload bytes, max |decoded - x|)."""
    rng = np.random.default_rng(1)
    last: list[np.ndarray] = []

    def round_trip() -> None:
        payload = codec.encode(x, rng)
        last[:] = [codec.decode(payload)]

    seconds = median_seconds(round_trip, repeat)
    size = len(codec.encode(x, rng))
    return seconds, size, float(np.max(np.abs(last[0] - x)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per codec (median)")
    parser.add_argument("--n", type=int, default=N, help="vector length (default: %(default)s)")
    parser.add_argument("--codecs", nargs="+", default=list(CODECS))
    args = parse_args(parser, SMOKE, argv)

    rng = np.random.default_rng(0)
    # a LoRA-delta-like vector: mostly small values with a heavier tail
    x = (rng.standard_normal(args.n) * 1e-3).astype(np.float32)
    x[rng.integers(0, args.n, args.n // 100)] *= 20
    dst = np.empty_like(x)
    copy_s = median_seconds(lambda: np.copyto(dst, x), args.repeat)
    raw = 4 * args.n

    load = load_average()
    print(
        f"codec encode+decode, n={args.n:,} float32 ({raw / 2**20:.1f} MiB), "
        f"median of {args.repeat}, load average {load}"
    )
    print(f"np.copyto baseline: {1e3 * copy_s:.2f} ms")
    print()
    header = (
        f"{'codec':<14} {'bytes':>12} {'vs fp32':>8} {'enc+dec ms':>11} {'x copyto':>9}"
        f" {'max |err|':>10}"
    )
    print(header)
    print("-" * len(header))
    fp32_bytes = encoded_size("fp32", args.n)
    for spec in args.codecs:
        codec = make_codec(spec)
        seconds, size, err = time_codec(codec, x, args.repeat)
        assert size == encoded_size(spec, args.n)
        print(
            f"{codec.spec:<14} {size:>12,} {fp32_bytes / size:>7.1f}x {1e3 * seconds:>11.1f}"
            f" {seconds / copy_s:>8.1f}x {err:>10.2e}"
        )


if __name__ == "__main__":
    main()
