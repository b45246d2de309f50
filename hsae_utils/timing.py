"""Wall-clock timing of the evaluation's phases, a one-thread context for small-op loops and the
machine's matmul rate. Torch-free at import (the pipeline's runner reads the rates)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator


class Timer:
    """Wall-clock seconds per named phase, split into model-side work and per-SAE work."""

    def __init__(self):
        self.model_side: dict[str, float] = {}
        self.per_sae: dict[str, dict[str, float]] = {}

    @contextmanager
    def model(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.model_side[name] = self.model_side.get(name, 0.0) + time.perf_counter() - t0

    @contextmanager
    def sae(self, run: str, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.add_sae(run, name, time.perf_counter() - t0)

    def add_sae(self, run: str, name: str, seconds: float) -> None:
        row = self.per_sae.setdefault(run, {})
        row[name] = row.get(name, 0.0) + seconds

    def summary(self) -> str:
        total_model = sum(self.model_side.values())
        lines = [f"model-side work (once): {total_model:.1f} s"]
        lines += [f"    {k}: {v:.1f} s" for k, v in self.model_side.items()]
        n = len(self.per_sae)
        if n:
            per = {}
            for row in self.per_sae.values():
                for k, v in row.items():
                    per[k] = per.get(k, 0.0) + v
            total_sae = sum(per.values())
            lines.append(
                f"per-SAE work: {total_sae:.1f} s for {n} SAE(s), {total_sae / n:.2f} s per SAE"
            )
            lines += [f"    {k}: {v / n:.2f} s per SAE" for k, v in per.items()]
            lines.append(f"total: {total_model + total_sae:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"model_side_s": self.model_side, "per_sae_s": self.per_sae}


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch / BLAS thread for loops of small operations (probe fits): on a shared 2-core
    CPU, thread synchronisation costs more than such operations themselves."""
    import torch
    from threadpoolctl import threadpool_limits  # only for probe fits

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(old)


# The fp32 matmul rates of the 2-core machines this project runs on, slow and fast end (GFLOP/s,
# scripts/benchmark.py section 1's roofline). Budgets are met on the slow end.
ROOFLINE_RANGE_GFLOPS = (119.0, 190.0)


def matmul_gflops(
    m: int = 2048, k: int = 576, n: int = 576, repeats: int = 4, rounds: int = 25
) -> float:
    """This machine's fp32 matmul rate on the CPU with torch's threads, in GFLOP/s: the best
    [m, k] @ [k, n] product (the `local` training step's shape) over `repeats` fresh pairs of
    operands, each warmed up for 0.25 s and then timed `rounds` times (~1.5 s in all). The best
    round is the least disturbed by other processes, as the benchmark reads its roofline. Fresh
    processes on one idle machine read 175-179 GFLOP/s with it, where a single short warm-up
    read 91-180 (2026-12-07): the final run's 143 was taken that way."""
    import torch

    g = torch.Generator().manual_seed(0)
    best = float("inf")
    for _ in range(repeats):
        a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.25:  # thread pool and clock up to speed
            a @ b
        for _ in range(rounds):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9
