"""Performance benchmark: the SAE training step, the model forward, evaluation, the pipelines.

    nice -n 19 .venv/bin/python scripts/benchmark.py --json outputs/benchmark.json   # full run
    .venv/bin/python scripts/benchmark.py --quick                 # sanity run (d = 576 only)
    .venv/bin/python scripts/benchmark.py --sections 1 2 3 --dims 2304 --device cuda --dtype bf16

The full run takes about 5 minutes on 2 idle cores (much longer on a busy machine).
Every section prints what it measured, its target and PASS / MISS:
  1. the fp32 matmul rate of this machine (the roofline) and, per SAE architecture at d = 576 and
     2,304 (dictionary size = d, batch 2,048), training-step tokens/s and the fraction of the
     roofline reached. FLOPs counted: the 5 matmuls of forward + backward (x W_enc, z W_dec,
     dxhat W_dec^T, z^T dxhat, x^T dpre: 5 x 2 B d F; x needs no gradient).
     Target >= 60 % (CPU, fp32).
  2. the same step in the field's trainers (scripts/bench_peers.py: dictionary_learning,
     SAELens, sparsify) on identical inputs, initial weights and batch: first-batch losses to 4
     decimals (where a peer's formula differs, the difference named and the reconstruction term
     compared), and the speed ratio ours / theirs for every architecture each peer has.
     Target >= 1.2x.
  3. the HierarchicalSAE's overhead over the ReLU SAE at equal settings: the every-step cost plus
     the mechanism steps (merge + resample every 100 steps) amortised. Target <= 5 % (paper: 20 %).
  4. activation caching (the model run only up to the hooked layer, one hook) against a naive
     `model.run_with_cache(tokens)` of the whole model with every hook, on the same tokens, and
     against the forward roofline (matmul FLOPs per token from the model config / the measured
     matmul rate). Target >= 1.5x the naive path (the `local` profile's model and layer).
  5. evaluation of N = 1, 4, 8 SAEs (core metrics and splice KL / CE, `smoke` budget): total time
     split into the model-side work, paid once, and the per-SAE work.
  6. wall times of the `local` and `smoke` pipelines as ./run_all.sh last recorded them in
     outputs/<profile>/notebooks/timings.json, against pipeline.PIPELINE_BUDGETS_MIN (local:
     notebooks 01-09 <= 22 min, all <= 35 min; smoke <= 5 min); then (6b) the `local`
     pipeline's lower bound: the matmul FLOPs of each notebook (`pipeline_flops`: caching's
     forward per token x tokens, 5 x 2 B d F per training step computed, the splice and SAE
     passes per evaluated SAE and the model side once, the readings with their 2,304-latent
     width runs, the ground-truth runs) at 100 % of 119 and 190 GFLOP/s, the slow and fast
     ends of our 2-core machines' matmul rate, against the 35-minute budget.
  7. the TopK and BatchTopK training step over the active latents only (hsae_utils/method/saes/
     sparse_decode.py) against the dense one, and the FLOPs the sparse step needs: the dense
     encoder forward x W_enc (2 B d F), the code's gradient dxhat W_dec^T (dense above 10 %
     active, else sampled at the k B entries), and 2 k B d each for the decode, z^T dxhat and
     x^T dpre over the active entries. Target >= 1.5x at d = 2,304, k = 320.
  8. one pass over the `local` activation cache for 3 SAEs (ReLU-L1, TopK, HierarchicalSAE;
     `train_many.train_many`) against training them one after the other (`train`), --shared-steps
     steps each: the time saved. Target > 0 (needs the `local` cache: notebook 01).
  9. sparse probing's pooling of N = 8 SAEs (`probing.sae_features_many`: each chunk of the stored
     per-token activations read from disk and converted once, then encoded by every SAE) against
     one pass per SAE (`sae_features`, the code before), on a memory-mapped store the size of
     `local`'s (1,440 texts x 127 tokens x 576, fp32) and on the same rows in bf16 (how stores
     above 4 GiB are kept), freshly initialised ReLU SAEs at d_sae = 576. The pooled features
     must be equal (bit for bit). Target >= 1.1x.
  10. notebook 10's synthetic runs (`ground_truth.experiment.run_tasks`): 8 runs of the local
     world one after the other against one worker process per core, rows equal bit for bit.
     Target >= 0.75 x cores (1.5x on 2 cores).
  11. the splice's KL step per chunk of 512 positions (`core.splice_losses`): the difference of
     log-probabilities written over the spliced ones against into a new tensor, KL equal bit for
     bit. Target >= 1.05x.

How it times. Shared machines are noisy, so configurations that are compared are timed
round-robin, one step (or forward) each per round, and interference hits them alike. A
configuration reports its fastest round (the roofline: its fastest matmul), the one least
disturbed by other processes; a comparison is the ratio of two such times, printed with the
median over rounds of the ratio of adjacent timings as a cross-check (the two agree on a quiet
machine). The HierarchicalSAE overhead, a difference of a few %, is that median. Trust ratios
taken in one run, not absolute times. On CUDA every timing is bracketed by
torch.cuda.synchronize(); `--dtype bf16` runs the timed work under bf16 autocast (CUDA only).

Section 2 needs the benchmark-only dependencies of requirements-bench.txt (SAELens is in the lock):
    .venv/bin/pip install --no-deps -r requirements-bench.txt
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import re
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from bench_peers import (
    DEAD_FRAC,
    PEER_ARCHS,
    PEER_LABELS,
    PEERS,
    TOTAL_STEPS,
    available,
    peer_step,
)  # scripts/, beside this file

from hsae_utils.analysis.measured import COMMITTED_OVERHEAD, write_overhead
from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.io import read_json, replace_marked_block, write_json_atomic
from hsae_utils.method.saes import ARCHITECTURES, config_from_profile
from hsae_utils.method.saes.sparse_decode import SAMPLED_MAX_DENSITY
from hsae_utils.method.train import TrainConfig, make_optimizer, train_step
from hsae_utils.pipeline.cli import PIPELINE_BUDGETS_MIN, budget_checks
from hsae_utils.timing import ROOFLINE_RANGE_GFLOPS

BATCH = 2048
ROOFLINE_TARGET, REFERENCE_TARGET, HSAE_TARGET, CACHE_TARGET = 0.60, 1.2, 0.05, 1.5
SPARSE_TARGET = 1.5  # sparse / dense TopK step speed at d = 2,304, k = 320


# ============================================================================================
# Device, timing, reporting
# ============================================================================================
class Device:
    """Where the timed work runs: synchronised timings and the optional bf16 autocast (CUDA)."""

    def __init__(self, name: str, dtype: str):
        self.device = torch.device(name)
        self.cuda = self.device.type == "cuda"
        if dtype == "bf16" and not self.cuda:
            raise SystemExit("--dtype bf16 is autocast on CUDA only; the CPU path runs fp32.")
        self.bf16 = dtype == "bf16"
        self.dtype_name = "bf16 autocast" if self.bf16 else "fp32"

    def autocast(self):
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def time(self, fn) -> float:
        """Seconds of one call of fn, the device drained before and after."""
        self.sync()
        t0 = time.perf_counter()
        with self.autocast():
            fn()
        self.sync()
        return time.perf_counter() - t0

    def describe(self) -> str:
        if self.cuda:
            return f"{torch.cuda.get_device_name(self.device)} ({self.dtype_name})"
        return f"CPU, {torch.get_num_threads()} torch threads ({self.dtype_name})"


def machine(dev: Device) -> dict:
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "nproc": nproc,
        "device": dev.describe(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


class Report:
    """Prints one line per checked figure; keeps every figure for --json."""

    def __init__(self):
        self.checks: list[dict] = []
        self.figures: dict[str, dict] = {}

    def check(
        self, section: int, name: str, value: float | None, shown: str, target: str, ok: bool | None
    ) -> None:
        status = {True: "PASS", False: "MISS", None: "-"}[ok]
        print(f"  {name:<60}{shown:>9}   target {target:<11}{status}")
        self.checks.append(
            {
                "section": section,
                "name": name,
                "value": value,
                "shown": shown,
                "target": target,
                "status": status,
            }
        )


class Rounds:
    """Round-robin timing of named callables: each runs once per round."""

    def __init__(self, dev: Device):
        self.dev, self.fns, self.times = dev, {}, {}

    def add(self, name: str, fn) -> None:
        self.fns[name], self.times[name] = fn, []

    def run_round(self) -> None:
        for name, fn in self.fns.items():
            self.times[name].append(self.dev.time(fn))

    def best(self, name: str) -> float:
        return min(self.times[name])

    def ratio(self, slow: str, fast: str) -> float:
        """How many times faster `fast` is: the ratio of the fastest rounds."""
        return self.best(slow) / self.best(fast)

    def median_ratio(self, slow: str, fast: str) -> float:
        """The same from the median over rounds of adjacent timings (cross-check)."""
        return statistics.median(s / f for s, f in zip(self.times[slow], self.times[fast]))


def matmul_rate(dev: Device, m: int, k: int, n: int) -> float:
    """FLOP/s of one [m, k] @ [k, n] matmul, best of 3 (the roofline sample of one round)."""
    a, b = torch.randn(m, k, device=dev.device), torch.randn(k, n, device=dev.device)
    dev.time(lambda: a @ b)
    return 2 * m * k * n / min(dev.time(lambda: a @ b) for _ in range(3))


# ============================================================================================
# Sections 1-3: the training step
# ============================================================================================
def build_sae(arch: str, d: int):
    """An SAE with the paper's settings at input size d = dictionary size."""
    profile = get_profile("paper", d_model=d, train_batch_size=BATCH)
    return ARCHITECTURES[arch](config_from_profile(arch, profile))


def kill_latents(sae) -> None:
    """Make the first latents never fire (a very negative encoder bias), as dead latents are."""
    with torch.no_grad():
        sae.b_enc[: int(DEAD_FRAC * sae.cfg.d_sae)] = -1e3


def force_dead(sae) -> None:
    """Mark the first latents dead for every criterion (AuxK, window, resampling)."""
    n = int(DEAD_FRAC * sae.cfg.d_sae)
    sae.firing.tokens_since_fired_F[:n] = 10**12
    if hasattr(sae, "window"):
        sae.window.age_F.fill_(sae.window.window)
        sae.window.rates_WF[:, :n] = 0.0


def our_step(dev: Device, sae, x, step: int, dead: bool = False):
    """hsae_utils.method.train.train_step, the exact step train() runs, as a timed callable."""
    sae.to(dev.device).train()
    opt = make_optimizer(sae, TrainConfig())
    gen = torch.Generator(device=dev.device).manual_seed(0)
    for s in (1, 2):  # warm-up: allocations, Adam state
        dev.time(lambda s=s: train_step(sae, opt, x, s, TOTAL_STEPS, 1.0, gen))

    def fn():
        if dead:
            force_dead(sae)
        train_step(sae, opt, x, step, TOTAL_STEPS, 1.0, gen)

    return fn


def measure_steps(dev: Device, d: int, rounds: int, peers: dict[str, str]) -> dict:
    """Time every configuration at input size d, round-robin, with a roofline sample per round,
    and the peers' steps (bench_peers.py) for the architectures each has. Small sizes get more
    rounds (x4 at d = 576: a step costs 1/16 of one at 2,304), so that their fastest rounds are
    as reliable for the same time."""
    rounds *= max(1, (2304 // d) ** 2 // 4)
    x = torch.randn(BATCH, d, generator=torch.Generator().manual_seed(0)).to(dev.device)
    saes = {
        name: build_sae(name.split()[0], d).to(dev.device)
        for name in ("relu", "topk", "topk dead", "batchtopk")
    }
    kill_latents(saes["topk dead"])
    r, compared = Rounds(dev), {}
    # The peers' steps first: they copy the initial weights before ours train them.
    for peer in peers:
        for name in PEER_ARCHS[peer]:
            with dev.autocast():
                ps = peer_step(peer, name.split()[0], saes[name], x, name.endswith("dead"))
            compared[(peer, name)] = ps
            dev.time(ps.step)  # warm-up: allocations, Adam state
            r.add(f"{peer} {name}", ps.step)
    # Step 1: (step + 1) % 100 != 0, so no mechanism runs; step 99 merges and resamples.
    r.add("relu", our_step(dev, saes["relu"], x, 1))
    r.add("hierarchical", our_step(dev, build_sae("hierarchical", d), x, 1))
    r.add("topk", our_step(dev, saes["topk"], x, 1))
    r.add("topk dead", our_step(dev, saes["topk dead"], x, 1, dead=True))
    r.add("batchtopk", our_step(dev, saes["batchtopk"], x, 1))
    r.add("mechanism step", our_step(dev, build_sae("hierarchical", d), x, 99, dead=True))
    peak = 0.0
    for _ in range(rounds):
        peak = max(peak, matmul_rate(dev, BATCH, d, d))
        r.run_round()
    return {"d": d, "rounds": r, "peak": peak, "flops": 5 * 2 * BATCH * d * d, "compared": compared}


LABELS = {
    "relu": "ReLU-L1",
    "hierarchical": "HierarchicalSAE (all mechanisms)",
    "topk": "TopK",
    "topk dead": "TopK, AuxK active (10% dead)",
    "batchtopk": "BatchTopK",
}


def section_roofline(dev: Device, steps: list[dict], report: Report) -> None:
    print(
        f"\n== 1. Training step vs the matmul roofline (batch {BATCH:,}, dictionary size = d, "
        f"{dev.dtype_name})"
    )
    cpu_fp32 = not dev.cuda
    for m in steps:
        d, r, peak, flops = m["d"], m["rounds"], m["peak"], m["flops"]
        print(
            f"d = {d:,}: {flops / 1e9:.2f} GFLOP of matmuls per step; roofline "
            f"[{BATCH}x{d}]@[{d}x{d}]: {peak / 1e9:.1f} GFLOP/s (best of "
            f"{len(r.times['relu'])} rounds)"
        )
        rows = report.figures.setdefault("1_training_step", {}).setdefault(str(d), {})
        rows["roofline_gflops"] = peak / 1e9
        for name, label in LABELS.items():
            sec = r.best(name)
            frac = flops / sec / peak
            rows[name] = {
                "ms_per_step": sec * 1e3,
                "tokens_per_s": BATCH / sec,
                "gflops": flops / sec / 1e9,
                "fraction_of_roofline": frac,
            }
            report.check(
                1,
                f"d={d} {label:<33}{BATCH / sec:>9,.0f} tok/s",
                frac,
                f"{frac:.0%}",
                ">= 60%" if cpu_fp32 else "(CPU only)",
                frac >= ROOFLINE_TARGET if cpu_fp32 else None,
            )


def agree(ours: float, theirs: float) -> bool:
    """Equal to 4 decimals, or to float32's resolution where that is coarser (its spacing is
    1.2e-4 at 1,000: 2 ulps, 2.4e-7 relative)."""
    return abs(ours - theirs) <= max(5e-5, 2.4e-7 * abs(ours))


def section_peers(steps: list[dict], peers: dict[str, str], report: Report) -> None:
    print(
        "\n== 2. The same step in the field's trainers (identical inputs, initial weights, batch)"
    )
    for peer in (p for p in PEERS if p not in peers):
        print(
            f"  {PEER_LABELS[peer]}: not installed: .venv/bin/pip install --no-deps "
            "-r requirements-bench.txt"
        )
        report.check(2, PEER_LABELS[peer], None, "not run", f">= {REFERENCE_TARGET}x", None)
    if not peers:
        return
    print(
        "  " + ", ".join(f"{PEER_LABELS[p]} {v}" for p, v in peers.items()) + ".\n"
        "  dictionary_learning: StandardTrainer / TopKTrainer / BatchTopKTrainer .update(); "
        "SAELens: SAETrainer.step\n  on its training SAEs (b_dec not subtracted before the "
        'encoder, as ours); sparsify: the inner step of\n  Trainer.fit (FVU loss, its "adam" '
        "optimizer), whose TopK decodes and back-propagates sparsely\n  (embedding_bag, "
        "index_add). dictionary_learning's and sparsify's encoders subtract b_dec from x,\n"
        "  which costs a 6th matmul in the backward; ours clip the gradient norm (as SAELens) "
        "and apply\n  weight decay. All use Adam at our learning rate."
    )
    notes, n_same, n_all = {}, 0, 0
    for m in steps:
        d = m["d"]
        for (peer, name), ps in m["compared"].items():
            same = agree(ps.ours, ps.theirs)
            n_same, n_all = n_same + same, n_all + 1
            tag = notes.setdefault(ps.note, len(notes) + 1) if ps.note else 0
            print(
                f"  d={d} {PEER_LABELS[peer]:<19} {name:<10} first-batch {ps.compared}: ours "
                f"{ps.ours:.4f}, theirs {ps.theirs:.4f}"
                + ("" if same else "  DIFFERENT: not a like-for-like comparison")
                + (f"  [{tag}]" if tag else "")
            )
            report.figures.setdefault("2_peer_losses", {}).setdefault(str(d), {})[
                f"{peer} {name}"
            ] = {
                "compared": ps.compared,
                "ours": ps.ours,
                "theirs": ps.theirs,
                "agree": same,
                "note": ps.note,
            }
    for note, i in notes.items():
        print(f"  [{i}] {note}")
    report.check(
        2,
        "first-batch losses agree with the peers' (4 decimals)",
        n_same,
        f"{n_same} / {n_all}",
        "all",
        n_same == n_all,
    )
    for m in steps:
        d, r = m["d"], m["rounds"]
        rows = report.figures.setdefault("2_reference", {}).setdefault(str(d), {})
        for peer in peers:
            for name in PEER_ARCHS[peer]:
                theirs = f"{peer} {name}"
                ratio, median = r.ratio(theirs, name), r.median_ratio(theirs, name)
                rows[theirs] = {
                    "ours_ms": r.best(name) * 1e3,
                    "theirs_ms": r.best(theirs) * 1e3,
                    "speedup": ratio,
                    "speedup_median": median,
                }
                report.check(
                    2,
                    f"d={d} {LABELS[name]:<29} / {PEER_LABELS[peer]} (median {median:.2f}x)",
                    ratio,
                    f"{ratio:.2f}x",
                    f">= {REFERENCE_TARGET}x",
                    ratio >= REFERENCE_TARGET,
                )


def section_hsae_overhead(steps: list[dict], report: Report) -> None:
    print("\n== 3. HierarchicalSAE overhead over the ReLU SAE (equal settings; paper: +20 %)")
    for m in steps:
        d, r = m["d"], m["rounds"]
        # A difference of a few %: the median of adjacent pairs cancels drifts in the load,
        # which move the fastest rounds by about as much.
        every = r.median_ratio("hierarchical", "relu") - 1
        fastest = r.ratio("hierarchical", "relu") - 1
        # One mechanism step (merge + resample, 10 % of latents dead) every 100 steps.
        mech_ms = r.best("mechanism step") * 1e3
        mech = (r.best("mechanism step") - r.best("hierarchical")) / 100 / r.best("relu")
        total = every + mech
        # Against TopK, the paper's baseline (its "+20 %"): the same two estimates.
        every_topk = r.median_ratio("hierarchical", "topk") - 1
        mech_topk = (r.best("mechanism step") - r.best("hierarchical")) / 100 / r.best("topk")
        report.figures.setdefault("3_hsae_overhead", {})[str(d)] = {
            "every_step": every,
            "every_step_fastest": fastest,
            "mechanisms_amortised": mech,
            "total": total,
            "mechanism_step_ms": mech_ms,
            # for the claims table (hsae_utils.analysis.measured)
            "vs_relu": total,
            "every_step_relu": every,
            "every_step_fastest_relu": fastest,
            "vs_topk": every_topk + mech_topk,
            "every_step_topk": every_topk,
            "every_step_fastest_topk": r.ratio("hierarchical", "topk") - 1,
            "mechanisms_amortised_topk": mech_topk,
        }
        print(
            f"  d={d}: every step {every:+.1%} (median of adjacent steps; fastest steps "
            f"{fastest:+.1%}); mechanism step {mech_ms:.0f} ms = {mech:+.1%} amortised over "
            "100 steps"
        )
        report.check(
            3, f"d={d} HSAE overhead", total, f"{total:+.1%}", "<= +5%", total <= HSAE_TARGET
        )


# ============================================================================================
# Sections 4-5: the language model (caching, evaluation)
# ============================================================================================
def random_tokens(model, n_contexts: int, seq: int) -> torch.Tensor:
    """Token ids with BOS first, like the cache's contexts (the cost does not depend on the ids)."""
    from hsae_utils.data.tokens import bos_token_id

    tokens = torch.randint(
        100, model.cfg.d_vocab, (n_contexts, seq), generator=torch.Generator().manual_seed(0)
    )
    tokens[:, 0] = bos_token_id(model.tokenizer)
    return tokens


def forward_flops_per_token(hf_config, n_blocks: int, seq: int, unembed: bool) -> float:
    """Matmul FLOPs per token of a Llama-style forward through n_blocks blocks (+ unembedding):
    the q, k, v, o projections, the gated MLP, and attention scores and values over the
    (seq + 1) / 2 positions a token sees on average under the causal mask."""
    c = hf_config
    d, h, dm = c.hidden_size, c.num_attention_heads, c.intermediate_size
    dh = getattr(c, "head_dim", None) or d // h
    kv = getattr(c, "num_key_value_heads", None) or h
    attention = 2 * 2 * h * dh * (seq + 1) / 2
    block = 2 * d * (h + 2 * kv) * dh + 2 * h * dh * d + 3 * 2 * d * dm + attention
    return n_blocks * block + (2 * d * c.vocab_size if unembed else 0)


def section_caching(
    dev: Device, model, profile, n_contexts: int, rounds: int, report: Report
) -> None:
    from hsae_utils.data.forward import layer_resid, resid_at_layer

    layer, seq = profile.layer, profile.context_size
    tokens = random_tokens(model, n_contexts, seq).to(dev.device)
    n_tok = tokens.numel()
    print(
        f"\n== 4. Activation caching: {profile.model_name}, {profile.hook_name}, {n_contexts} "
        f"contexts x {seq} tokens per forward, {rounds} rounds"
    )

    def naive():
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)  # the whole model, every hook cached
        del cache

    r = Rounds(dev)
    r.add("naive", naive)
    # What the cache builder (notebook 01) and the evaluation call: the decoder layers the bridge
    # wraps, run directly up to the layer (checked equal to the bridge's output once per model).
    r.add("ours", lambda: layer_resid(model, tokens, layer))
    # The bridge stopped after the layer with one hook (the fallback for other architectures).
    r.add("bridge", lambda: resid_at_layer(model, tokens, layer))
    for fn in r.fns.values():  # warm-up
        dev.time(fn)
    hf = model.original_model.config
    d, dm = hf.hidden_size, hf.intermediate_size
    peak = 0.0
    for _ in range(rounds):
        peak = max(peak, matmul_rate(dev, n_tok, d, dm))
        r.run_round()
    flops_ours = forward_flops_per_token(hf, layer + 1, seq, unembed=False)
    flops_full = forward_flops_per_token(hf, hf.num_hidden_layers, seq, unembed=True)
    print(
        f"  matmul roofline [{n_tok}x{d}]@[{d}x{dm}]: {peak / 1e9:.1f} GFLOP/s; to layer {layer}"
        f": {flops_ours / 1e6:.0f} MFLOP/token, roofline {peak / flops_ours:,.0f} tok/s; whole "
        f"model + unembedding: {flops_full / 1e6:.0f} MFLOP/token"
    )
    rows = {
        "roofline_gflops": peak / 1e9,
        "roofline_tokens_per_s": peak / flops_ours,
        "tokens_per_forward": n_tok,
    }
    for name, label, flops in (
        ("naive", "naive run_with_cache (all layers, all hooks)", flops_full),
        ("ours", "cache path (direct blocks up to the layer)", flops_ours),
        ("bridge", "bridge stop_at_layer, one hook (fallback)", flops_ours),
    ):
        rate = n_tok / r.best(name)
        rows[name] = {"tokens_per_s": rate, "fraction_of_roofline": rate * flops / peak}
        print(f"  {label:<46}{rate:>9,.0f} tok/s = {rate * flops / peak:.0%} of its roofline")
    ratio, median = r.ratio("naive", "ours"), r.median_ratio("naive", "ours")
    rows.update(
        speedup_vs_naive=ratio,
        speedup_vs_naive_median=median,
        bridge_speedup_vs_naive=r.ratio("naive", "bridge"),
    )
    report.figures["4_caching"] = rows
    report.check(
        4,
        f"cache path / naive run_with_cache (median {median:.2f}x)",
        ratio,
        f"{ratio:.2f}x",
        ">= 1.5x",
        ratio >= CACHE_TARGET,
    )
    bridge = rows["bridge_speedup_vs_naive"]
    report.check(
        4, "bridge stop_at_layer / naive (fallback path)", bridge, f"{bridge:.2f}x", "-", None
    )
    frac = rows["ours"]["fraction_of_roofline"]
    report.check(4, "cache path, fraction of the forward roofline", frac, f"{frac:.0%}", "-", None)


def section_evaluation(
    dev: Device, model, profile, n_contexts: int, seq: int, rounds: int, report: Report
) -> None:
    from hsae_utils.data.tokens import bos_token_id
    from hsae_utils.evals import (
        SAEAdapter,
        build_splice_data,
        reconstruction_metrics,
        splice_metrics,
    )
    from hsae_utils.timing import Timer

    tokens = random_tokens(model, n_contexts, seq)
    special = [bos_token_id(model.tokenizer)]
    smoke = get_profile("smoke")
    budget = (
        " (the smoke budget)"
        if (n_contexts, seq) == (smoke.n_eval_contexts, smoke.context_size)
        else ""
    )
    print(
        f"\n== 5. Evaluation of N SAEs: reconstruction metrics + splice KL / CE on {n_contexts} "
        f"contexts x {seq} tokens{budget};\n  freshly initialised ReLU SAEs, d_sae = "
        f"{profile.dict_size} (the cost does not depend on the weights); best of {rounds} "
        "round(s)"
    )
    batch, best = smoke.eval_batch_contexts, {}
    for _ in range(rounds):
        for n in (1, 4, 8):
            timer = Timer()
            cfg = config_from_profile("relu", profile)
            adapters = {
                f"sae{i}": SAEAdapter(ARCHITECTURES["relu"](cfg, seed=i).to(dev.device))
                for i in range(n)
            }
            t0 = time.perf_counter()
            with dev.autocast():
                with timer.model("layer output, clean / ablated CE and KL"):
                    data = build_splice_data(
                        model,
                        tokens,
                        profile.layer,
                        special,
                        cache_root=None,
                        batch_contexts=batch,
                        progress=False,
                        massive_factor=profile.massive_norm_factor,
                    )
                x_raw = data.resid_NSD[data.keep_NS]
                for name, adapter in adapters.items():
                    with timer.sae(name, "reconstruction metrics"):
                        reconstruction_metrics(adapter, x_raw)
                # The clean logits are recomputed once here (model side), shared by all N SAEs.
                splice_metrics(
                    model,
                    data,
                    adapters,
                    profile.layer,
                    batch_contexts=batch,
                    timer=timer,
                    progress=False,
                )
            dev.sync()
            now = {
                "total_s": time.perf_counter() - t0,
                "model_side_s": sum(timer.model_side.values()),
                "per_sae_s": sum(sum(row.values()) for row in timer.per_sae.values()) / n,
            }
            best[n] = {k: min(v, best.get(n, now)[k]) for k, v in now.items()}
    print(
        f"  {'N':>3}{'total s':>10}{'model-side s':>14}{'per SAE s':>11}{'model share':>13}"
        f"{'model side paid per SAE':>25}"
    )
    for n, b in best.items():
        print(
            f"  {n:>3}{b['total_s']:>10.2f}{b['model_side_s']:>14.2f}{b['per_sae_s']:>11.2f}"
            f"{b['model_side_s'] / b['total_s']:>13.0%}"
            f"{n * (b['model_side_s'] + b['per_sae_s']):>24.2f}s"
        )
    report.figures["5_evaluation"] = {str(n): b for n, b in best.items()}
    # Paid once: the model-side time does not grow with N (the slack is for noise).
    growth = best[8]["model_side_s"] / best[1]["model_side_s"]
    report.check(
        5,
        "model-side time at N = 8 / at N = 1",
        growth,
        f"{growth:.2f}x",
        "~1x (once)",
        growth <= 1.5,
    )


# ============================================================================================
# Section 6: the pipelines
# ============================================================================================
def section_pipelines(report: Report) -> None:
    print(
        "\n== 6. Pipeline wall times (sum of the notebooks' times, recorded by ./run_all.sh in "
        "outputs/<profile>/notebooks/timings.json)"
    )
    notebooks = sorted(p.name for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for name, budgets in PIPELINE_BUDGETS_MIN.items():
        path = get_profile(name).output_dir / "notebooks" / "timings.json"
        if not path.is_file():
            print(f"  {name}: not measured yet: run ./run_all.sh --profile {name}")
            for part, limit in budgets.items():
                report.check(
                    6, f"{name} pipeline {part}", None, "not run", f"<= {limit:g} min", None
                )
            continue
        t = read_json(path)
        timed = t.get("notebooks", {})
        missing = [nb for nb in notebooks if nb not in timed]
        m = t.get("machine", {})
        print(
            f"  {name}: last recorded {t.get('date', '?')} on {m.get('nproc', '?')} cores, "
            f"{m.get('cpu_model', '?')}"
        )
        print(
            "    " + ", ".join(f"{nb[:2]}: {v['seconds']:.0f} s" for nb, v in sorted(timed.items()))
        )
        if missing:
            print(f"    not timed yet: {', '.join(missing)}")
        report.figures.setdefault("6_pipelines", {})[name] = {**t, "missing": missing}
        for part, minutes, slow, limit, ok in budget_checks(t, name):
            report.check(
                6,
                f"{name} pipeline {part}" + (" (incomplete)" if missing else ""),
                slow * 60,
                f"{minutes:.1f} min" + (f" ({slow:.1f} at the slow end)" if slow > minutes else ""),
                f"<= {limit:g} min",
                None if missing else ok,
            )


# ============================================================================================
# Section 6 (continued): the local pipeline's lower bound at the matmul roofline
# ============================================================================================
SHARED_STEPS = re.compile(
    r"seed (\d+): (\d+) runs in one pass, ([\d,]+) gradient steps computed for ([\d,]+)"
)


def sae_step_flops(batch: int, d: int, d_sae: int) -> float:
    """A dense training step's matmuls: 5 x 2 B d F (section 1)."""
    return 5 * 2 * batch * d * d_sae


def computed_steps(profile, notebook: str, runs: int) -> tuple[int, str]:
    """Gradient steps a notebook's shared passes computed, from its executed copy's sharing report
    (`paper_runs.sharing_report`: twins copy a leader's step), else every run's steps."""
    path = profile.output_dir / "notebooks" / notebook
    found = SHARED_STEPS.findall(path.read_text()) if path.is_file() else []
    if found:
        steps = sum(int(c.replace(",", "")) for _, _, c, _ in found)
        return steps, f"{steps:,} steps computed (twins share the rest), read from {path.name}"
    steps = runs * profile.train_steps
    return steps, f"{steps:,} steps (every run's; no sharing report found)"


def _eval_rows(profile) -> dict[str, int]:
    """Rows the evaluation encodes per SAE besides the validation split: the probing store's
    tokens and the absorption words, read from the model-side cache when it is there (else 0:
    left out of the bound)."""
    import json

    rows = {"probing": 0, "absorption": 0}
    root = profile.output_dir / "eval_cache"
    for kind, arrays in (("probing", ("acts",)), ("absorption", ("x_train", "x_test"))):
        for manifest in sorted(root.glob(f"{kind}-*/manifest.json")):
            shapes = json.loads(manifest.read_text())["arrays"]
            rows[kind] = sum(shapes[a]["shape"][0] for a in arrays if a in shapes)
    return rows


def pipeline_flops(profile_name: str = "local") -> list[dict]:
    """The matmul FLOPs of each notebook of `./run_all.sh --profile <name>`, counted from the
    profile, the run registry and the model config: one row per notebook with its GFLOP and what
    was counted. A lower bound: attention's softmax, norms, activations, the optimizer, top-k
    selection, Python and I/O are not counted, nor absorption's prompt tokens beyond one per word.
    """
    from transformers import AutoConfig

    from hsae_utils.data.model import embedded_model_folder
    from hsae_utils.experiment.ground_truth.curves import GT_K_FACTORS
    from hsae_utils.experiment.ground_truth.data import setup_for_profile
    from hsae_utils.experiment.ground_truth.experiment import (
        GT_CONFIGS,
        VERDICT_CONFIGS,
        gt_profile,
    )
    from hsae_utils.experiment.sensitivity import alt_profile, alternatives
    from hsae_utils.runs import PAPER_RUNS, sweep_runs

    p = get_profile(profile_name)
    if not p.is_embedded:
        raise SystemExit(f"pipeline_flops counts the embedded model's profiles, not {p.name!r}.")
    hf = AutoConfig.from_pretrained(embedded_model_folder(verbose=False))
    d, seq, layer, n_layers = p.d_model, p.context_size, p.layer, hf.num_hidden_layers
    to_layer = forward_flops_per_token(hf, layer + 1, seq, unembed=False)
    after = forward_flops_per_token(hf, n_layers - layer - 1, seq, unembed=True)  # the splice
    splice_tokens = p.n_eval_contexts * seq
    extra = _eval_rows(p)

    def per_sae(d_sae: int) -> float:
        encode = 2 * d * d_sae
        return (
            p.n_valid_tokens * 2 * encode  # reconstruction: encode + decode
            + splice_tokens * (2 * encode + after)  # the SAE and the layers after the hook
            + (extra["probing"] + extra["absorption"]) * encode
        )

    model_side = (
        splice_tokens * (to_layer + 2 * after)  # the splice set: clean and zero-ablated
        + (extra["probing"] + extra["absorption"]) * to_layer
    )
    rows = []

    def add(notebook: str, flops: float, what: str) -> None:
        rows.append({"notebook": notebook, "gflop": flops / 1e9, "what": what})

    tokens = p.n_train_tokens + p.n_valid_tokens
    add("01", tokens * to_layer, f"{tokens:,} tokens x {to_layer / 1e6:.0f} MFLOP to layer {layer}")
    n_runs = len(PAPER_RUNS) * len(p.seeds) + len(sweep_runs(p)) * len(p.sweep_seeds)
    steps, how = computed_steps(p, "02_baselines.ipynb", n_runs)
    step = sae_step_flops(p.train_batch_size, d, p.dict_size)
    add("02", steps * step, f"{n_runs} SAEs: {how} x {step / 1e9:.2f} GFLOP")
    n_eval = n_runs
    add(
        "08",
        model_side + after * splice_tokens + n_eval * per_sae(p.dict_size),
        f"{n_eval} SAEs x {per_sae(p.dict_size) / 1e9:.0f} GFLOP (splice {splice_tokens:,} "
        f"tokens x {after / 1e6:.0f} MFLOP after the hook, reconstruction, probing / absorption "
        f"rows {extra['probing']:,} / {extra['absorption']:,}) + model side "
        f"{(model_side + after * splice_tokens) / 1e12:.1f} TFLOP",
    )
    setup = setup_for_profile(p)
    gp = gt_profile(p, setup)
    n_gt = (
        len(GT_CONFIGS) * len(p.seeds)
        + len(VERDICT_CONFIGS) * max(0, p.ground_truth_verdict_seeds - len(p.seeds))
        + len(sweep_runs(dataclasses.replace(gp, sweep_k_factors=GT_K_FACTORS))) * len(p.seeds)
    )
    gt_step = sae_step_flops(gp.train_batch_size, setup.hidden_dim, setup.d_sae)
    add(
        "10",
        n_gt * gp.train_steps * gt_step,
        f"{n_gt} runs x {gp.train_steps} steps x {gt_step / 1e6:.0f} MFLOP (d = "
        f"{setup.hidden_dim}, {setup.d_sae} latents, batch {gp.train_batch_size})",
    )
    reading_runs = [
        alt_profile(p, alt).dict_size
        for alt in alternatives(p, include=("width",))
        for _ in alt.runs
    ]
    train = sum(p.train_steps * sae_step_flops(p.train_batch_size, d, f) for f in reading_runs)
    evaluate = after * splice_tokens + sum(per_sae(f) for f in reading_runs)
    wide = sum(f != p.dict_size for f in reading_runs)
    add(
        "11",
        train + evaluate,
        f"{len(reading_runs)} runs ({wide} at {max(reading_runs):,} latents) trained "
        f"{train / 1e12:.1f} TFLOP (every step: no sharing counted) and evaluated "
        f"{evaluate / 1e12:.1f} TFLOP",
    )
    n_feat = 4  # TopK, BatchTopK, L1, HierarchicalSAE (seed 42)
    features = n_feat * (
        p.n_valid_tokens * 2 * d * p.dict_size + 2 * p.dict_size * d * hf.vocab_size
    )
    add("12", features, f"{n_feat} SAEs: codes of the validation split, logit effects")
    return rows


def section_lower_bound(report: Report, profile_name: str = "local") -> None:
    print(
        f"\n== 6b. Lower bound of `./run_all.sh --profile {profile_name}`: matmul FLOPs per "
        "notebook at 100 % of the fp32 matmul roofline (everything else free)"
    )
    rows = pipeline_flops(profile_name)
    total = sum(r["gflop"] for r in rows)
    slow, fast = ROOFLINE_RANGE_GFLOPS
    path = get_profile(profile_name).output_dir / "notebooks" / "timings.json"
    measured = read_json(path).get("notebooks", {}) if path.is_file() else {}
    seconds = {nb[:2]: v["seconds"] for nb, v in measured.items()}
    print(
        f"  {'nb':<4}{'GFLOP':>9}{f'{slow:.0f} GF/s':>11}{f'{fast:.0f} GF/s':>11}{'last run':>10}"
    )
    for r in rows:
        last = seconds.get(r["notebook"])
        print(
            f"  {r['notebook']:<4}{r['gflop']:>9,.0f}{r['gflop'] / slow:>10.0f}s"
            f"{r['gflop'] / fast:>10.0f}s{'' if last is None else f'{last:>9.0f}s'}  {r['what']}"
        )
    budget = PIPELINE_BUDGETS_MIN[profile_name]["all"]
    report.figures["6_lower_bound"] = {"rows": rows, "total_gflop": total, "rates": [slow, fast]}
    for rate, end in ((slow, "slow"), (fast, "fast")):
        minutes = total / rate / 60
        report.check(
            6,
            f"{profile_name} lower bound at {rate:.0f} GFLOP/s ({end} end), all notebooks",
            minutes * 60,
            f"{minutes:.1f} min",
            f"<= {budget:g} min",
            minutes <= budget,
        )


# ============================================================================================
# Section 7: sparse TopK decode
# ============================================================================================
def section_sparse(dev: Device, dims: list[int], rounds: int, report: Report) -> None:
    print(
        f"\n== 7. TopK / BatchTopK step over the active latents only vs dense (batch {BATCH:,}, "
        f"{dev.dtype_name})"
    )
    x_by_d = {
        d: torch.randn(BATCH, d, generator=torch.Generator().manual_seed(0)).to(dev.device)
        for d in dims
    }
    for d in dims:
        r = Rounds(dev)
        for arch in ("topk", "batchtopk"):
            for mode in ("dense", "sparse"):
                sae = build_sae(arch, d)
                sae.decode_mode = mode
                r.add(f"{arch} {mode}", our_step(dev, sae, x_by_d[d], 1))
        for _ in range(rounds * max(1, (2304 // d) ** 2 // 4)):
            r.run_round()
        k = sae.cfg.k
        # Sparse: the encoder forward x W_enc stays dense (it selects the latents), and so does
        # the code's gradient above SAMPLED_MAX_DENSITY (a GEMM read at the active entries); the
        # decode, W_dec's and W_enc's gradients run over the k B active entries only.
        n_dense = 1 + (k / d > SAMPLED_MAX_DENSITY)
        dense_gf = 5 * 2 * BATCH * d * d / 1e9
        sparse_gf = (n_dense * d + (5 - n_dense) * k) * 2 * BATCH * d / 1e9
        print(
            f"  d = {d:,}, k = {k} ({k / d:.1%} active): matmul work {dense_gf:.2f} GFLOP dense, "
            f"{sparse_gf:.2f} GFLOP sparse ({n_dense} dense GEMM{'s' if n_dense > 1 else ''} "
            f"+ {5 - n_dense} products over the active entries)"
        )
        rows = report.figures.setdefault("7_sparse_decode", {}).setdefault(str(d), {})
        for arch in ("topk", "batchtopk"):
            ratio = r.ratio(f"{arch} dense", f"{arch} sparse")
            median = r.median_ratio(f"{arch} dense", f"{arch} sparse")
            rows[arch] = {
                "k": k,
                "dense_ms": r.best(f"{arch} dense") * 1e3,
                "sparse_ms": r.best(f"{arch} sparse") * 1e3,
                "speedup": ratio,
                "speedup_median": median,
                "gflop_dense": dense_gf,
                "gflop_sparse": sparse_gf,
            }
            dense_s, sparse_s = r.best(f"{arch} dense"), r.best(f"{arch} sparse")
            print(
                f"  d={d} {LABELS[arch]}: dense step {dense_s * 1e3:.0f} ms "
                f"({dense_gf / dense_s:.1f} GFLOP/s), sparse step {sparse_s * 1e3:.0f} ms "
                f"({sparse_gf / sparse_s:.1f} GFLOP/s of the work it needs)"
            )
            targeted = d == 2304
            report.check(
                7,
                f"d={d} {LABELS[arch]:<10} sparse step speed-up (median {median:.2f}x)",
                ratio,
                f"{ratio:.2f}x",
                ">= 1.5x" if targeted else "-",
                ratio >= SPARSE_TARGET if targeted else None,
            )


# ============================================================================================
# Section 8: one pass over the cache for many SAEs
# ============================================================================================
def section_shared_pass(steps: int, report: Report) -> None:
    import tempfile

    from hsae_utils.data.activations import ActivationStore, CacheError
    from hsae_utils.method.train import train
    from hsae_utils.method.train_many import TrainJob, train_many

    print(f"\n== 8. One pass over the cache for 3 SAEs vs 3 passes (`local`, {steps} steps each)")
    profile = get_profile("local")
    try:
        store = ActivationStore(profile.cache_dir / "train", cache_dtype=profile.cache_dtype)
    except CacheError as e:
        print(f"  not run: {e}")
        report.check(8, "shared pass saving", None, "not run", "> 0", None)
        return
    cfg = TrainConfig.from_profile(
        profile,
        profile.seeds[0],
        steps=steps,
        device="cpu",
        checkpoint_every=10**9,
        log_every=10**9,
    )
    archs = ("relu", "topk", "hierarchical")

    def saes():
        return [ARCHITECTURES[a](config_from_profile(a, profile)) for a in archs]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for a, sae in zip(archs, saes()):
            train(sae, store, cfg, Path(tmp) / "alone" / a, progress=False)
        separate = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_many(
            [TrainJob(sae, cfg, Path(tmp) / "shared" / a) for a, sae in zip(archs, saes())],
            store,
            progress=False,
        )
        shared = time.perf_counter() - t0
    saving = 1 - shared / separate
    report.figures["8_shared_pass"] = {
        "steps": steps,
        "separate_s": separate,
        "shared_s": shared,
        "saving": saving,
    }
    print(f"  3 separate runs {separate:.1f} s, one shared pass {shared:.1f} s")
    report.check(8, "shared pass saving, 3 SAEs", saving, f"{saving:.0%}", "> 0", saving > 0)


# ============================================================================================
# Main
# ============================================================================================
# ============================================================================================
# Section 9: sparse probing's pooling, all SAEs in one pass
# ============================================================================================
def section_probing_pool(dev: Device, rounds: int, report: Report, n_saes: int = 8) -> None:
    import tempfile

    import numpy as np

    from hsae_utils.data.activations import to_storage
    from hsae_utils.evals import SAEAdapter
    from hsae_utils.evals import probing as pr
    from hsae_utils.io import open_memmap_allocated

    profile = get_profile("local")
    n_texts = 16 * (profile.probe_train_per_class + profile.probe_test_per_class)  # 16 classes
    per_text, d = profile.probe_max_tokens - 1, profile.d_model
    print(
        f"\n== 9. Sparse probing pooling of {n_saes} SAEs: one pass over the stored rows for all "
        f"of them vs one pass each;\n  {n_texts:,} texts x {per_text} tokens x {d} (memory-mapped"
        f" on disk), ReLU SAEs d_sae = {profile.dict_size}; best of {rounds} round(s)"
    )
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(n_texts * per_text, d, generator=g) * 3
    cfg = config_from_profile("relu", profile)
    adapters = [
        SAEAdapter(ARCHITECTURES["relu"](cfg, seed=i).to(dev.device)) for i in range(n_saes)
    ]
    offsets = torch.arange(0, n_texts + 1) * per_text
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            store = open_memmap_allocated(
                Path(tmp) / f"{dtype}.npy",
                np.uint16 if dtype == "bfloat16" else np.float32,
                tuple(rows.shape),
            )
            store[:] = to_storage(rows, dtype)
            store.flush()
            data = pr.ProbingData(
                ["t"],
                {"t": ["a", "b"]},
                store,
                offsets,
                np.zeros(n_texts, int),
                np.zeros(n_texts, int),
                np.zeros(n_texts, int),
                acts_dtype=dtype,
            )
            results = {}
            r = Rounds(dev)
            r.add(
                "one pass each",
                lambda data=data, results=results: results.__setitem__(
                    "each", [pr.sae_features(a, data) for a in adapters]
                ),
            )
            r.add(
                "one pass for all",
                lambda data=data, results=results: results.__setitem__(
                    "all", pr.sae_features_many(adapters, data)
                ),
            )
            for _ in range(rounds):
                r.run_round()
            equal = all(np.array_equal(a, b) for a, b in zip(results["each"], results["all"]))
            speedup = r.ratio("one pass each", "one pass for all")
            print(
                f"  {dtype}: one pass each {r.best('one pass each'):.2f} s, one pass for all "
                f"{r.best('one pass for all'):.2f} s (median ratio "
                f"{r.median_ratio('one pass each', 'one pass for all'):.2f}x); features equal: "
                f"{equal}"
            )
            report.figures[f"9_probing_pool_{dtype}"] = {
                "each_s": r.best("one pass each"),
                "all_s": r.best("one pass for all"),
                "speedup": speedup,
                "equal": equal,
            }
            report.check(
                9,
                f"probing pooling, {n_saes} SAEs, {dtype} store: speed-up",
                speedup,
                f"{speedup:.2f}x",
                ">= 1.1x",
                speedup >= 1.1 and equal,
            )
            del store, data, r  # the memory map is closed before its folder goes


# ============================================================================================
# Section 10: the ground-truth runs of notebook 10 on every core
# ============================================================================================
GT_PARALLEL_TARGET = 0.75  # speed-up per worker: 1.5x on 2 cores


def section_ground_truth_workers(report: Report, steps: int, n_runs: int = 8) -> None:
    import tempfile

    import pandas as pd

    from hsae_utils.experiment.ground_truth import build_world, setup_for_profile
    from hsae_utils.experiment.ground_truth.experiment import (
        LABELS,
        GTTask,
        default_workers,
        run_tasks,
    )
    from hsae_utils.runs import RUNS

    profile = get_profile("local", train_steps=steps)
    workers = default_workers(profile)
    configs = list(RUNS)[:n_runs]
    print(
        f"\n== 10. Notebook 10's runs on the synthetic world (`local`: "
        f"{setup_for_profile(profile).hidden_dim} dims, {steps} steps each): {len(configs)} runs "
        f"one after the other (1 thread) vs {workers} worker processes (1 thread each)"
    )
    if workers < 2:
        print("  not run: one CPU core available")
        report.check(10, "ground-truth runs on every core", None, "not run", "-", None)
        return
    world = build_world(setup_for_profile(profile))
    times, tables, warm = {}, {}, {}
    old = os.environ.get("HSAE_OUTPUT_ROOT")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # once per session, not per run: sae_lens' import here, the fork server's (its
            # imports) and the workers' start; timed apart, then both paths compared warm
            short = get_profile("local", train_steps=20)
            for n in (1, workers):
                os.environ["HSAE_OUTPUT_ROOT"] = str(Path(tmp) / f"warm{n}")
                root = short.output_dir / "ground_truth" / "warm"
                tasks = [GTTask(c, 1, root, {"label": LABELS[c]}) for c in configs[:2]]
                t0 = time.perf_counter()
                run_tasks(short, world, tasks, workers=n, progress=False)
                warm[n] = time.perf_counter() - t0
            for n in (1, workers):
                os.environ["HSAE_OUTPUT_ROOT"] = str(Path(tmp) / f"w{n}")
                root = profile.output_dir / "ground_truth" / "bench"
                tasks = [GTTask(c, 42, root, {"label": LABELS[c]}) for c in configs]
                t0 = time.perf_counter()
                rows = run_tasks(profile, world, tasks, workers=n, progress=False)
                times[n] = time.perf_counter() - t0
                tables[n] = pd.DataFrame(rows).drop(columns=["train_s", "total_s"])
    finally:
        if old is None:
            os.environ.pop("HSAE_OUTPUT_ROOT", None)
        else:
            os.environ["HSAE_OUTPUT_ROOT"] = old
    equal = tables[1].equals(tables[workers])
    speedup = times[1] / times[workers]
    print(
        f"  warm-up (2 runs of 20 steps; the first call of a session): here {warm[1]:.1f} s, "
        f"{workers} workers {warm[workers]:.1f} s (the fork server's imports, the workers' start)"
    )
    print(
        f"  one after the other {times[1]:.1f} s, {workers} workers {times[workers]:.1f} s "
        f"(workers started anew, fork server warm); rows equal bit for bit: {equal}"
    )
    report.figures["10_ground_truth_workers"] = {
        "runs": len(configs),
        "steps": steps,
        "workers": workers,
        "sequential_s": times[1],
        "workers_s": times[workers],
        "warm_up_s": {str(n): v for n, v in warm.items()},
        "speedup": speedup,
        "equal": equal,
    }
    target = GT_PARALLEL_TARGET * workers
    report.check(
        10,
        f"ground-truth runs, {workers} workers / one after the other (rows equal: {equal})",
        speedup,
        f"{speedup:.2f}x",
        f">= {target:.2g}x",
        speedup >= target and equal,
    )


# ============================================================================================
# Section 11: the splice's KL step without its [chunk, vocab] copy
# ============================================================================================
def section_splice_kl(rounds: int, report: Report, vocab: int = 49_152) -> None:
    """KL(clean || spliced) of one chunk of positions as `core.splice_losses` computes it, the
    difference written over the spliced log-probabilities (now) against into a new tensor (the
    code before): the same values, one [chunk, vocab] allocation and write less per SAE."""
    from hsae_utils.evals.core import LOGIT_CHUNK_TOKENS

    n = LOGIT_CHUNK_TOKENS
    print(
        f"\n== 11. Splice KL step, {n} positions x {vocab:,} vocabulary (SmolLM2), per SAE and "
        f"chunk: difference into a new tensor vs over the spliced log-probabilities; best of "
        f"{rounds} rounds"
    )
    g = torch.Generator().manual_seed(0)
    logp_c = torch.log_softmax(torch.randn(n, vocab, generator=g), -1)
    logits = torch.randn(n, vocab, generator=g)
    p_c, out = logp_c.exp(), {}

    def copy():
        logp = torch.log_softmax(logits, -1)
        out["copy"] = torch.einsum("nv,nv->n", p_c, logp_c - logp)

    def in_place():
        logp = torch.log_softmax(logits, -1)
        out["in place"] = torch.einsum("nv,nv->n", p_c, torch.sub(logp_c, logp, out=logp))

    r = Rounds(Device("cpu", "fp32"))
    r.add("copy", copy)
    r.add("in place", in_place)
    for _ in range(rounds):
        r.run_round()
    equal = torch.equal(out["copy"], out["in place"])
    speedup = r.ratio("copy", "in place")
    print(
        f"  new tensor {r.best('copy') * 1e3:.0f} ms, in place {r.best('in place') * 1e3:.0f} ms"
        f" (median ratio {r.median_ratio('copy', 'in place'):.2f}x); KL equal bit for bit: {equal}"
    )
    report.figures["11_splice_kl"] = {
        "copy_ms": r.best("copy") * 1e3,
        "in_place_ms": r.best("in place") * 1e3,
        "speedup": speedup,
        "equal": equal,
    }
    report.check(
        11,
        "splice KL step in place / with a copy",
        speedup,
        f"{speedup:.2f}x",
        ">= 1.05x",
        speedup >= 1.05 and equal,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="sanity run: d = 576 only, few rounds, small model batches",
    )
    ap.add_argument(
        "--sections",
        type=int,
        nargs="+",
        default=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        choices=range(1, 12),
        metavar="N",
        help="sections to run (default: all)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, CUDA only"
    )
    ap.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=None,
        help="SAE input sizes (default 576 2304; --quick: 576)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="round-robin rounds of training steps at d = 2,304, x4 at d = 576 "
        "(default 12; --quick: 3)",
    )
    ap.add_argument(
        "--shared-steps",
        type=int,
        default=None,
        help="training steps per SAE in section 8 (default 60; --quick: 20)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    ap.add_argument(
        "--readme",
        action="store_true",
        help="write the checked figures into docs/performance.md (between the benchmark markers)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = Device(args.device, args.dtype)
    dims = args.dims or ([576] if args.quick else [576, 2304])
    rounds = args.rounds or (3 if args.quick else 12)
    sections = set(args.sections)
    report = Report()
    info = machine(dev)
    print(
        f"{info['cpu']}, {info['nproc']} cores; {info['device']}; torch {info['torch']}; load "
        f"average {info['load_average_1min']:.2f} (other processes distort timings); "
        + ("--quick" if args.quick else "full run")
    )
    t_start = time.perf_counter()

    if sections & {1, 2, 3}:
        peers = {p: v for p in PEERS if (v := available(p))} if 2 in sections else {}
        steps = [measure_steps(dev, d, rounds, peers) for d in dims]
        if 1 in sections:
            section_roofline(dev, steps, report)
        if 2 in sections:
            section_peers(steps, peers, report)
        if 3 in sections:
            section_hsae_overhead(steps, report)
            meta = {
                "when": datetime.now().strftime("%Y-%m-%d"),
                "device": info["device"],
                "quick": args.quick,
                "rounds": rounds,
            }
            path = write_overhead(report.figures["3_hsae_overhead"], meta)
            print(f"  overheads written to {path} (the claims table's train_time verdict)")
            if args.readme and not args.quick:  # the run behind docs/performance.md's table
                write_overhead(report.figures["3_hsae_overhead"], meta, COMMITTED_OVERHEAD)
                print(f"  and to {COMMITTED_OVERHEAD.relative_to(REPO_ROOT)} (committed)")

    if sections & {4, 5}:
        from hsae_utils.data.model import load_model

        profile, smoke = get_profile("local"), get_profile("smoke")
        model = load_model(profile, device=str(dev.device))
        if 4 in sections:
            section_caching(
                dev,
                model,
                profile,
                n_contexts=2 if args.quick else 8,
                rounds=2 if args.quick else 3,
                report=report,
            )
        if 5 in sections:
            section_evaluation(
                dev,
                model,
                profile,
                n_contexts=2 if args.quick else smoke.n_eval_contexts,
                seq=64 if args.quick else smoke.context_size,
                rounds=1 if args.quick else 2,
                report=report,
            )

    if 6 in sections:
        section_pipelines(report)
        section_lower_bound(report)
    if 7 in sections:
        section_sparse(dev, dims, rounds, report)
    if 8 in sections:
        section_shared_pass(args.shared_steps or (20 if args.quick else 60), report)
    if 9 in sections:
        section_probing_pool(dev, rounds=1 if args.quick else 3, report=report)
    if 10 in sections:
        section_ground_truth_workers(report, steps=100 if args.quick else 500)
    if 11 in sections:
        section_splice_kl(rounds=3 if args.quick else 10, report=report)

    info["load_average_1min_end"] = os.getloadavg()[0]
    info["seconds"] = time.perf_counter() - t_start
    n_pass = sum(c["status"] == "PASS" for c in report.checks)
    n_miss = sum(c["status"] == "MISS" for c in report.checks)
    print(
        f"\n{n_pass} PASS, {n_miss} MISS in {info['seconds']:.0f} s; load average now "
        f"{info['load_average_1min_end']:.2f}"
    )
    if args.json:
        write_json_atomic(
            args.json,
            {
                "command": " ".join(["scripts/benchmark.py"] + sys.argv[1:]),
                "machine": info,
                "quick": args.quick,
                "dims": dims,
                "rounds": rounds,
                "sections": sorted(sections),
                "checks": report.checks,
                "figures": report.figures,
            },
        )
        print(f"figures written to {args.json}")
    if args.readme:
        write_readme(
            REPO_ROOT / "docs" / "performance.md",
            info,
            report.checks,
            " ".join(["scripts/benchmark.py"] + sys.argv[1:]),
        )


def write_readme(readme: Path, info: dict, checks: list[dict], command: str) -> None:
    """Replace the block between the benchmark markers of `readme` (docs/performance.md) with
    this run's checked figures, so the table there is always the output of one run, never typed
    in."""
    lines = [
        f"`{command}` on {info['cpu']}, {info['nproc']} cores, {info['device']}, torch "
        f"{info['torch']}, load average {info['load_average_1min']:.2f} at the start and "
        f"{info['load_average_1min_end']:.2f} at the end, {info['seconds'] / 60:.1f} minutes, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| section | figure | measured | target | |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['section']} | {c['name']} | {c['shown']} | {c['target']} | {c['status']} |"
        for c in checks
    ]
    replace_marked_block(readme, "benchmark", "\n".join(lines))
    print(f"{readme.name}: benchmark table updated ({len(checks)} figures)")


if __name__ == "__main__":
    main()
