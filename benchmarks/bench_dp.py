"""DP noise cost: the exact discrete Gaussian sampler's ns/sample at the schemes' variances, and a SecAgg (and
Plaintext) round with and without DistributedGaussian, measured side by side in one run.

    python benchmarks/bench_dp.py [--n 20] [--m 100000] [--repeats 3]

Variances: (z clip 2^16)^2 / m for m survivors (z = clip = 1), as DistributedGaussian sizes each client's share.
Timings on a shared machine are noisy: rounds alternate with and without DP and the median is reported.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

import securefl
from securefl import dp
from securefl.dp.sampler import discrete_gaussian


def sampler_rows(samples: int, repeats: int) -> list[tuple[int, float, float, float]]:
    """(m, sigma, best wall ns/sample, best CPU ns/sample) for m survivors."""
    discrete_gaussian(10, 100)  # compile / load the kernel cache
    rows = []
    for m in (1, 2, 5, 10, 20, 50, 100):
        variance = math.ceil((2.0**16) ** 2 / m)
        discrete_gaussian(variance, 1000)  # tables for this variance
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            discrete_gaussian(variance, samples)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        rows.append((m, math.sqrt(variance), min(wall) / samples * 1e9, min(cpu) / samples * 1e9))
    return rows


def round_seconds(scheme: type, n: int, m: int, repeats: int) -> dict[bool, tuple[float, float]]:
    """{with DP: (median wall s, median CPU s)} of a round without and with DistributedGaussian(1, 1), alternating."""
    rng = np.random.default_rng(0)
    ups = [torch.from_numpy(rng.normal(0, 1e-3, m).astype(np.float32)) for _ in range(n)]
    plain, noisy = scheme(seed=0), scheme(seed=0, dp=dp.DistributedGaussian(1.0, 1.0))
    plain.aggregate(ups)
    noisy.aggregate(ups)  # warm-up: kernels, tables, keys
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for _ in range(repeats):
        for with_dp, agg in ((False, plain), (True, noisy)):
            t0, c0 = time.perf_counter(), time.process_time()
            agg.aggregate(ups)
            times[with_dp].append((time.perf_counter() - t0, time.process_time() - c0))
    return {k: (statistics.median(t for t, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--m", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    print(f"sampler: {a.n * a.m:,} draws per variance (one round's client noise), best of {a.repeats}")
    print("| survivors m | sigma (ring units) | wall ns/sample | CPU ns/sample |")
    print("| --- | --- | --- | --- |")
    for m, sigma, wall, cpu in sampler_rows(a.n * a.m, a.repeats):
        print(f"| {m} | {sigma:,.0f} | {wall:.1f} | {cpu:.1f} |")
    print(f"\nround n={a.n}, m={a.m:,}: median of {a.repeats}, alternating (wall; CPU of this process)")
    print("| scheme | no DP wall (s) | DistributedGaussian wall (s) | ratio | no DP CPU (s) "
          "| DistributedGaussian CPU (s) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for scheme in (securefl.SecAgg, securefl.Plaintext):
        r = round_seconds(scheme, a.n, a.m, a.repeats)
        (w0, c0), (w1, c1) = r[False], r[True]
        print(f"| {scheme.__name__} | {w0:.3f} | {w1:.3f} | {w1 / w0:.2f}x | {c0:.3f} | {c1:.3f} | {c1 / c0:.2f}x |")


if __name__ == "__main__":
    main()
