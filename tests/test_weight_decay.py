"""The optimizer readings of "Adam with weight decay 0.01" (TrainConfig.optimizer)."""

from __future__ import annotations

import pytest
import torch

from hsae_utils.experiment.ground_truth.data import TensorStore
from hsae_utils.method.saes import TopKSAE, TopKSAEConfig
from hsae_utils.method.train import (
    OPTIMIZER_READINGS,
    TrainConfig,
    make_optimizer,
    train,
    train_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls on one thread

D, F, B, STEPS = 8, 24, 32, 12


def _sae():
    return TopKSAE(TopKSAEConfig(d_in=D, d_sae=F, k=3, dead_after_tokens=2 * B), seed=0)


def _store():
    g = torch.Generator().manual_seed(0)
    codes = torch.relu(torch.randn(512, 2 * F, generator=g) - 1.5)
    return TensorStore(codes @ torch.randn(2 * F, D, generator=g))


@pytest.mark.parametrize(
    "reading, cls, decay",
    [
        ("adamw", torch.optim.AdamW, 0.01),
        ("adam_l2", torch.optim.Adam, 0.01),
        ("none", torch.optim.Adam, 0.0),
    ],
)
def test_each_reading_builds_the_optimizer_it_names(reading, cls, decay):
    opt = make_optimizer(_sae(), TrainConfig(optimizer=reading))
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["weight_decay"] == decay
    assert group["fused"]  # the fast path is kept for every reading


def test_default_is_decoupled_adamw():
    assert TrainConfig().optimizer == "adamw" and TrainConfig().weight_decay == 0.01


def test_unknown_reading_names_the_valid_ones():
    with pytest.raises(ValueError, match="adam_l2"):
        TrainConfig(optimizer="adam")


def test_adam_l2_reproduces_the_previous_trainer_bit_for_bit(tmp_path):
    """The previous trainer built torch.optim.Adam(weight_decay=0.01, fused=True); the same loop
    by hand must give the weights `train(optimizer="adam_l2")` gives, bit for bit."""
    cfg = TrainConfig(
        steps=STEPS, batch_size=B, optimizer="adam_l2", seed=3, log_every=4, checkpoint_every=STEPS
    )
    store = _store()
    trained = train(_sae(), store, cfg, tmp_path / "run", progress=False).sae

    ref = _sae()
    ref.reset_parameters(cfg.seed)
    opt = torch.optim.Adam(
        ref.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=0.01, fused=True
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = store.iter_batches(B, cfg.seed)
    for step in range(STEPS):
        train_step(ref, opt, next(batches), step, STEPS, cfg.grad_clip, gen)
    for name, p in ref.named_parameters():
        assert torch.equal(p, dict(trained.named_parameters())[name]), name


def test_readings_differ_only_by_the_decay(tmp_path):
    """none == adamw with weight_decay 0 == adam_l2 with weight_decay 0 (one Adam update)."""
    store = _store()
    final = {}
    for reading, wd in (("none", 0.01), ("adamw", 0.0), ("adam_l2", 0.0), ("adamw", 0.01)):
        cfg = TrainConfig(
            steps=STEPS, batch_size=B, optimizer=reading, weight_decay=wd, checkpoint_every=STEPS
        )
        final[reading, wd] = train(
            _sae(), store, cfg, tmp_path / f"{reading}{wd}", progress=False
        ).sae.W_enc.detach()
    assert torch.allclose(final["none", 0.01], final["adamw", 0.0], atol=1e-6)
    assert torch.allclose(final["none", 0.01], final["adam_l2", 0.0], atol=1e-6)
    assert not torch.allclose(final["none", 0.01], final["adamw", 0.01], atol=1e-6)
    assert set(OPTIMIZER_READINGS) == {"adamw", "adam_l2", "none"}
