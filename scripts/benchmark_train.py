"""Training-step throughput of every SAE architecture, against the machine's fp32 matmul roofline.

    .venv/bin/python scripts/benchmark_train.py [--dims 576 2304] [--rounds 8] [--threads N]

For each input size d (dictionary size = d, batch 2,048) it times `hsae_utils.train.train_step`,
the exact step `train()` runs, on a fixed random batch, and prints tokens/s, the achieved matmul
GFLOP/s (forward + backward: x W_enc, z W_dec, dz = dxhat W_dec^T, dW_dec = z^T dxhat,
dW_enc = x^T dpre; 5 x 2 B d F FLOPs, no gradient for x) as a fraction of a plain [B, d] x [d, F]
matmul's GFLOP/s, and the HierarchicalSAE's overhead over the ReLU SAE. Mechanism steps (merge +
resample, every 100 steps) are timed separately with 10 % of latents forced dead, and amortised.
Configurations are timed round-robin, one step each per round; each reports its fastest step (and
the roofline its fastest matmul), and the HSAE overhead is the median ratio of adjacent HSAE / ReLU
steps. On a shared machine this filters out most of other processes' interference, which would
otherwise dominate; an idle machine gives the most meaningful numbers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from hsae_utils.config import get_profile
from hsae_utils.saes import ARCHITECTURES, config_from_profile
from hsae_utils.train import TrainConfig, make_optimizer, train_step


def matmul_gflops(B: int, d: int, F: int, n: int = 3) -> float:
    """GFLOP/s of the encoder-shaped matmul, the roofline the training step is compared to."""
    x, W = torch.randn(B, d), torch.randn(d, F)
    x @ W
    t = time.perf_counter()
    for _ in range(n):
        x @ W
    return 2 * B * d * F * n / (time.perf_counter() - t) / 1e9


def build(arch: str, d: int, B: int, **overrides):
    profile = get_profile("paper", d_model=d, train_batch_size=B)
    return ARCHITECTURES[arch](config_from_profile(arch, profile, **overrides))


def force_dead(sae, frac: float = 0.1) -> None:
    """Mark a fraction of latents dead for every criterion (AuxK, window, resampling)."""
    n = int(frac * sae.cfg.d_sae)
    sae.firing.tokens_since_fired_F[:n] = 10**12
    if hasattr(sae, "window"):
        sae.window.age_F.fill_(sae.window.window)
        sae.window.rates_WF[:, :n] = 0.0


class Timer:
    """One configuration: its SAE and optimizer, and the time of every step it ran."""

    def __init__(self, sae, x, step0: int, dead: bool = False):
        self.sae, self.x, self.step0, self.dead = sae, x, step0, dead
        self.opt = make_optimizer(sae, TrainConfig())
        self.gen = torch.Generator().manual_seed(0)
        self.times: list[float] = []
        for s in range(2):  # warm-up: allocations, Adam state
            train_step(sae, self.opt, x, s + 1, 10_000, 1.0, self.gen)

    def run(self) -> None:
        if self.dead:
            force_dead(self.sae)
        t = time.perf_counter()
        train_step(self.sae, self.opt, self.x, self.step0, 10_000, 1.0, self.gen)
        self.times.append(time.perf_counter() - t)

    @property
    def best(self) -> float:
        return min(self.times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[576, 2304])
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=8, help="rounds over all configurations")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B = args.batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {B}, fp32, CPU; "
          f"load average {os.getloadavg()[0]:.2f} (other processes distort timings)")
    for d in args.dims:
        F = d
        flops = 5 * 2 * B * d * F
        x = torch.randn(B, d)
        # step 1: (step + 1) % 100 != 0, so no mechanism runs; step 99 merges and resamples
        timers = {
            "relu": Timer(build("relu", d, B), x, 1),
            "hierarchical (all mechanisms)": Timer(build("hierarchical", d, B), x, 1),
            "topk": Timer(build("topk", d, B), x, 1),
            "topk (AuxK active, 10% dead)": Timer(build("topk", d, B), x, 1, dead=True),
            "batchtopk": Timer(build("batchtopk", d, B), x, 1),
            "mechanism step": Timer(build("hierarchical", d, B), x, 99, dead=True),
        }
        peak = 0.0
        for _ in range(args.rounds):  # round-robin, so interference hits all configs alike
            peak = max(peak, matmul_gflops(B, d, F))
            for timer in timers.values():
                timer.run()

        print(f"\nd = d_sae = {d}: {flops / 1e9:.2f} GFLOP of matmuls per step; "
              f"fp32 matmul [{B}x{d}]@[{d}x{F}]: {peak:.1f} GFLOP/s (best)")
        print(f"{'architecture (best step)':<32}{'ms/step':>9}{'tokens/s':>11}{'GFLOP/s':>9}"
              f"{'roofline':>10}")
        for name, timer in timers.items():
            if name != "mechanism step":
                sec = timer.best
                print(f"{name:<32}{sec * 1e3:>9.1f}{B / sec:>11,.0f}{flops / sec / 1e9:>9.1f}"
                      f"{flops / sec / 1e9 / peak:>10.0%}")
        relu, hsae = timers["relu"], timers["hierarchical (all mechanisms)"]
        # Adjacent ReLU / HSAE steps see the same load: the median of their ratios is robust.
        ratio = statistics.median(h / r for h, r in zip(hsae.times, relu.times))
        extra = (timers["mechanism step"].best - hsae.best) / 100  # one such step per 100
        print(f"{'mechanism step (merge+resample)':<32}{timers['mechanism step'].best * 1e3:>9.1f}"
              f"   = +{extra * 1e3:.2f} ms/step amortised over 100 steps")
        total = 100 * (ratio - 1 + extra / relu.best)
        print(f"HierarchicalSAE overhead over the ReLU SAE: {total:+.1f}% (every step "
              f"{100 * (ratio - 1):+.1f}%: median ratio of adjacent steps; "
              f"mechanisms {100 * extra / relu.best:+.1f}%)")


if __name__ == "__main__":
    main()
