"""The field's trainers (scripts/bench_peers.py, benchmark section 2) on our initial weights and
batch: their first-batch loss agrees with ours to 4 decimals where the formula is the same, and
the reconstruction term where it is not; their step runs and trains."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from hsae_utils.config import REPO_ROOT
from hsae_utils.method.saes import (
    BatchTopKSAE,
    BatchTopKSAEConfig,
    ReLUSAE,
    ReLUSAEConfig,
    TopKSAE,
    TopKSAEConfig,
)

pytestmark = pytest.mark.usefixtures("one_thread")
D, F, K = 32, 96, 12

_spec = importlib.util.spec_from_file_location(
    "bench_peers", REPO_ROOT / "scripts" / "bench_peers.py"
)
bp = sys.modules.setdefault("bench_peers", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bp)


def ours(arch: str):
    if arch == "relu":
        sae = ReLUSAE(ReLUSAEConfig(d_in=D, d_sae=F), seed=2)
    else:
        cls, cfg = (
            (BatchTopKSAE, BatchTopKSAEConfig) if arch == "batchtopk" else (TopKSAE, TopKSAEConfig)
        )
        sae = cls(cfg(d_in=D, d_sae=F, k=K), seed=2)
    with torch.no_grad():  # the latents the peers count as dead never fire (benchmark: same)
        sae.b_enc[: int(bp.DEAD_FRAC * F)] = -1e3
    return sae


CASES = [(peer, arch) for peer in bp.PEERS for arch in bp.PEER_ARCHS[peer]]


@pytest.mark.parametrize("peer,arch", CASES, ids=[f"{p}-{a}" for p, a in CASES])
def test_peer_first_batch_loss_agrees_and_its_step_trains(peer, arch):
    if bp.available(peer) is None:
        pytest.skip(
            f"{peer} not installed: .venv/bin/pip install --no-deps -r "
            "requirements-bench.txt (scripts/install_test_deps.sh does it)"
        )
    x_BD = 3 * torch.randn(256, D, generator=torch.Generator().manual_seed(0))
    sae = ours(arch.split()[0])
    ps = bp.peer_step(peer, arch.split()[0], sae, x_BD, dead=arch.endswith("dead"))
    assert ps.ours > 1.0
    # 4 decimals, or float32's resolution where that is coarser (2 ulps)
    assert abs(ps.ours - ps.theirs) <= max(5e-5, 2.4e-7 * abs(ps.ours)), (ps.compared, ps.note)
    # Named where the formulas differ: AuxK (dead latents), SAELens' norm-weighted L1, FVU.
    assert bool(ps.note) == (
        arch.endswith("dead") or peer == "sparsify" or (peer == "sae_lens" and arch == "relu")
    )
    assert (ps.compared == "loss") == (not arch.endswith("dead") and peer != "sparsify")
    start = {n: p.detach().clone() for n, p in ps.model.named_parameters()}
    for _ in range(2):
        ps.step()
    for name, p in ps.model.named_parameters():
        assert torch.isfinite(p).all(), name
    moved = [n for n, p in ps.model.named_parameters() if not torch.equal(p, start[n])]
    assert len(moved) >= 3, moved  # encoder, decoder and biases train
