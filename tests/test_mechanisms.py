"""Schedules, window tracking, resampling and merging, each checked against hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hsae_utils.method import mechanisms as mech
from hsae_utils.method.saes import HierarchicalSAE, HierarchicalSAEConfig, StepOutput
from hsae_utils.method.schedules import adaptive_alpha, default_lambda0, linear_decay
from hsae_utils.method.train import TrainConfig, make_optimizer, train_step

D, NF = 8, 12


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- schedules


def test_linear_decay_at_start_middle_end():
    lam0 = default_lambda0(2304)
    assert lam0 == pytest.approx(1 / 48)
    assert linear_decay(lam0, 0, 4882) == lam0
    assert linear_decay(lam0, 2441, 4882) == pytest.approx(lam0 / 2)
    assert linear_decay(lam0, 4882, 4882) == 0.0


def test_adaptive_alpha_clamps_at_both_ends():
    assert adaptive_alpha(torch.tensor(5.0)).item() == pytest.approx(0.5)  # 2.5 / 5
    assert adaptive_alpha(torch.tensor(100.0)).item() == pytest.approx(0.1)  # 0.025 -> 0.1
    assert adaptive_alpha(torch.tensor(0.5)).item() == pytest.approx(2.0)  # 5.0 -> 2.0
    assert adaptive_alpha(torch.tensor(0.0)).item() == pytest.approx(2.0)
    x = torch.tensor(4.0, requires_grad=True)
    assert not adaptive_alpha(x * 1).requires_grad  # detached: no gradient through alpha


# ----------------------------------------------------------------------------- window tracking


def test_window_rates_hand_computed():
    # 3 latents, 4 tokens per step, window of 3 steps; z > 0 patterns per step:
    fired = [
        torch.tensor([4, 0, 1]),  # step 0
        torch.tensor([2, 0, 0]),  # step 1
        torch.tensor([0, 0, 3]),  # step 2
        torch.tensor([4, 1, 0]),  # step 3 overwrites step 0
    ]
    tracker = mech.WindowTracker(window=3, d_sae=3)
    for step, f in enumerate(fired[:3]):
        assert not tracker.full_mask().any()
        tracker.update(step, mech.step_firing_rate(f, 4))
    assert torch.allclose(tracker.rates(), torch.tensor([6 / 12, 0.0, 4 / 12]))
    tracker.update(3, mech.step_firing_rate(fired[3], 4))
    assert torch.allclose(tracker.rates(), torch.tensor([6 / 12, 1 / 12, 3 / 12]))
    assert torch.equal(tracker.dead_mask(0.1), torch.tensor([False, True, False]))
    # a re-initialised latent is not judged until its window refills
    tracker.reset(torch.tensor([1]))
    assert torch.equal(tracker.dead_mask(0.1), torch.tensor([False, False, False]))

    # the "fired at least once in step j" reading
    anyt = mech.WindowTracker(window=3, d_sae=3)
    for step, f in enumerate(fired[1:]):
        anyt.update(step, mech.step_firing_rate(f, 4, reading="any"))
    assert torch.allclose(anyt.rates(), torch.tensor([2 / 3, 1 / 3, 1 / 3]))


def test_firing_counter():
    c = mech.FiringCounter(3)
    c.update(torch.tensor([1, 0, 0]), 10)
    c.update(torch.tensor([0, 0, 2]), 10)
    assert c.tokens_since_fired_F.tolist() == [10, 20, 0]
    assert torch.equal(c.dead_mask(20), torch.tensor([False, True, False]))
    assert torch.allclose(c.frequency(), torch.tensor([0.05, 0.0, 0.1]))
    c.reset(torch.tensor([0]))
    assert c.tokens_since_fired_F.tolist() == [0, 20, 0] and c.fire_count_F[0] == 0


# ----------------------------------------------------------------------------- resampling


def _sae(**kw) -> HierarchicalSAE:
    return HierarchicalSAE(HierarchicalSAEConfig(d_in=D, d_sae=NF, **kw))


def test_resample_touches_exactly_the_given_latents():
    sae = _sae()
    with torch.no_grad():
        sae.b_enc.uniform_(0.1, 1.0)
    before = {k: v.clone() for k, v in sae.named_parameters()}
    x = torch.randn(32, D, generator=torch.Generator().manual_seed(0))
    sq_err = torch.zeros(32)
    sq_err[[3, 17]] = torch.tensor([1.0, 2.0])  # only two inputs have any loss
    dead = torch.tensor([2, 7])
    idx = mech.resample_latents(sae, dead, x, sq_err, torch.Generator().manual_seed(0))
    assert sorted(idx.tolist()) == [3, 17]  # drawn from high-loss inputs, without replacement
    keep = torch.ones(NF, dtype=torch.bool)
    keep[dead] = False
    assert torch.equal(sae.W_enc[:, keep], before["W_enc"][:, keep])
    assert torch.equal(sae.b_enc[keep], before["b_enc"][keep])
    assert torch.equal(sae.W_dec[keep], before["W_dec"][keep])
    assert torch.equal(sae.b_dec, before["b_dec"])
    assert torch.allclose(sae.W_dec[dead], F.normalize(x[idx], dim=-1))
    enc_norm = 0.2 * before["W_enc"][:, keep].norm(dim=0).mean()
    assert torch.allclose(sae.W_enc[:, dead].norm(dim=0), enc_norm.expand(2))
    assert torch.allclose(F.normalize(sae.W_enc[:, dead].T, dim=-1), sae.W_dec[dead])
    assert not sae.b_enc[dead].any()


def test_reset_adam_state_zeroes_exactly_those_latents():
    sae = _sae()
    opt = make_optimizer(sae, TrainConfig())
    x = torch.randn(32, D, generator=torch.Generator().manual_seed(1))
    sae.loss(x, 0, 10).loss.backward()
    opt.step()
    before = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in sae.parameters()}
    lat = torch.tensor([1, 5, 6])
    mech.reset_adam_state(opt, sae, lat)
    others = torch.ones(NF, dtype=torch.bool)
    others[lat] = False
    for key in ("exp_avg", "exp_avg_sq"):
        assert not opt.state[sae.W_enc][key][:, lat].any()
        assert not opt.state[sae.b_enc][key][lat].any()
        assert not opt.state[sae.W_dec][key][lat].any()
        assert torch.equal(opt.state[sae.W_enc][key][:, others], before[sae.W_enc][key][:, others])
        assert torch.equal(opt.state[sae.b_enc][key][others], before[sae.b_enc][key][others])
        assert torch.equal(opt.state[sae.W_dec][key][others], before[sae.W_dec][key][others])
        assert torch.equal(opt.state[sae.b_dec][key], before[sae.b_dec][key])
        assert before[sae.W_dec][key][lat].any()  # there was something to reset


def _output(sae, x, fired):
    with torch.no_grad():
        xhat, z = sae(x)
    return StepOutput(torch.tensor(1.0), xhat, z, (x - xhat).pow(2).sum(-1), fired)


@pytest.mark.parametrize("window_tracking", [False, True])
def test_resampling_step_picks_exactly_the_dead_latents(window_tracking):
    sae = _sae(
        window_size=4,
        resample_every=4,
        window_tracking=window_tracking,
        clustering=False,
        dead_rate=0.1,
    )
    x = torch.randn(10, D, generator=torch.Generator().manual_seed(2))
    fired = torch.full((NF,), 5)
    fired[[0, 9]] = 0  # never fire
    fired[4] = 1  # rate 0.1 per step in window: not below 0.1; never "silent" either
    gen = torch.Generator().manual_seed(0)
    for step in range(3):
        assert sae.after_step(step, x, _output(sae, x, fired), gen) == []
    W_before = sae.W_dec.clone()
    events = sae.after_step(3, x, _output(sae, x, fired), gen)
    assert events == [{"event": "resample", "step": 4, "n_latents": 2, "reset": [0, 9]}]
    changed = (sae.W_dec != W_before).any(-1)
    assert changed.nonzero().squeeze(1).tolist() == [0, 9]
    # their statistics restart: nothing is dead again right after
    assert not sae.resample_mask(10)[[0, 9]].any()


def test_resampling_resets_optimizer_state_in_a_training_step():
    sae = _sae(window_size=2, resample_every=2, clustering=False, dead_rate=0.05)
    with torch.no_grad():
        sae.b_enc[[3, 8]] = -1e3  # these two can never fire
    opt = make_optimizer(sae, TrainConfig())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(3))
    _, ev0 = train_step(sae, opt, x, 0, 10, 1.0, gen)
    state_before = opt.state[sae.W_dec]["exp_avg"].clone()
    _, ev1 = train_step(sae, opt, x, 1, 10, 1.0, gen)
    assert ev0 == [] and [e["reset"] for e in ev1] == [[3, 8]]
    assert not opt.state[sae.W_dec]["exp_avg"][[3, 8]].any()
    assert not opt.state[sae.W_enc]["exp_avg_sq"][:, [3, 8]].any()
    assert opt.state[sae.W_dec]["exp_avg"][[0, 1, 2]].ne(state_before[[0, 1, 2]]).any()
    assert sae.b_enc[[3, 8]].eq(0).all()


def test_no_mechanism_event_after_the_last_step():
    """A latent re-initialised after step T would be exported untrained: dead latents at t = T
    are left as they are, by resampling and by merging alike; the same latents one interval
    earlier are resampled."""
    sae = _sae(window_size=2, resample_every=2, merge_every=2, dead_rate=0.05)
    with torch.no_grad():
        sae.b_enc[[3, 8]] = -1e3  # these two can never fire
        sae.W_dec[5] = sae.W_dec[4]  # a pair above the merge threshold
    opt = make_optimizer(sae, TrainConfig())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, D, generator=torch.Generator().manual_seed(3))
    _, ev0 = train_step(sae, opt, x, 0, 2, 1.0, gen)
    W_before = sae.W_dec.clone()
    _, ev1 = train_step(sae, opt, x, 1, 2, 1.0, gen)  # step t = T: the run ends here
    assert ev0 == [] and ev1 == []
    assert sae.b_enc[[3, 8]].lt(-900).all()  # not re-initialised (bias 0 after a resample)
    assert F.cosine_similarity(sae.W_dec[[3, 8]], W_before[[3, 8]]).gt(0.99).all()
    # the same SAE in a longer run acts at t = 2
    _, ev = train_step(sae, opt, x, 1, 4, 1.0, gen)
    assert {e["event"] for e in ev} == {"resample", "merge"}


# ----------------------------------------------------------------------------- merging


def _planted_directions() -> torch.Tensor:
    """Rows 0..11 random but nearly orthogonal (D = 12 basis), then planted similarities."""
    W = torch.eye(NF, NF)[:, :D].clone()  # rows 8..11 are zero here; overwritten below
    W[8] = F.normalize(W[0] + 0.30 * W[1], dim=0)  # cos(0, 8) = 0.958
    W[9] = F.normalize(W[0] + 0.45 * W[2], dim=0)  # cos(0, 9) = 0.912; 0 is taken by 8 first
    W[10] = F.normalize(W[3] + 0.40 * W[4], dim=0)  # cos(3, 10) = 0.928
    W[11] = F.normalize(W[5] + 0.70 * W[6], dim=0)  # cos(5, 11) = 0.819 < 0.9: not merged
    return W


def test_find_merge_pairs_greedy_disjoint_above_threshold():
    W = _planted_directions()
    sim = mech.cosine_similarity_matrix(W)
    # above 0.9: (0, 8) 0.958, (3, 10) 0.928, (0, 9) 0.912; below: (8, 9) 0.873, (5, 11) 0.819
    assert sim[0, 8] > sim[3, 10] > sim[0, 9] > 0.9 > sim[8, 9] > sim[5, 11]
    # greedy: (0, 9) loses latent 0 to the more similar (0, 8)
    assert mech.find_merge_pairs(sim, 0.9).tolist() == [[0, 8], [3, 10]]
    assert mech.find_merge_pairs(sim, 0.99).numel() == 0


def test_merge_averages_and_frees_j():
    sae = _sae(window_size=5, merge_every=5, resample_every=5, resampling=False)
    with torch.no_grad():
        sae.W_dec.copy_(_planted_directions())
        sae.W_enc.copy_(sae.W_dec.T * 2)
        sae.b_enc.copy_(torch.arange(NF, dtype=torch.float))
    W_enc, W_dec = sae.W_enc.clone(), sae.W_dec.clone()
    x = torch.randn(16, D, generator=torch.Generator().manual_seed(4))
    fired = torch.full((NF,), 3)
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        assert sae.after_step(step, x, _output(sae, x, fired), gen) == []
    events = sae.after_step(4, x, _output(sae, x, fired), gen)
    assert events == [{"event": "merge", "step": 5, "pairs": [[0, 8], [3, 10]], "reset": [8, 10]}]
    assert torch.allclose(sae.W_enc[:, 0], (W_enc[:, 0] + W_enc[:, 8]) / 2)
    assert sae.b_enc[0] == (0 + 8) / 2 and sae.b_enc[3] == (3 + 10) / 2
    assert torch.allclose(sae.W_dec[3], F.normalize(W_dec[3] + W_dec[10], dim=0))
    # freed latents re-initialised from inputs (as resampled ones); untouched latents unchanged
    assert sae.b_enc[[8, 10]].eq(0).all()
    assert torch.allclose(sae.W_dec[[8, 10]].norm(dim=-1), torch.ones(2))
    untouched = [i for i in range(NF) if i not in (0, 3, 8, 10)]
    assert torch.equal(sae.W_dec[untouched], W_dec[untouched])
    assert torch.equal(sae.W_enc[:, untouched], W_enc[:, untouched])


def test_merge_reinit_zero_and_encoder_similarity():
    sae = _sae(
        window_size=1,
        merge_every=1,
        resampling=False,
        merge_reinit="zero",
        merge_similarity="encoder",
    )
    with torch.no_grad():
        sae.W_enc.copy_(_planted_directions().T)
        sae.W_dec.copy_(torch.linalg.qr(torch.randn(D, D))[0].repeat(2, 1)[:NF])
    # decoder rows 8..11 repeat rows 0..3: "both" needs encoder and decoder to agree
    both = mech.latent_similarity(sae, "both")
    assert math.isclose(both[0, 8].item(), 1 / math.sqrt(1.09), rel_tol=1e-5)
    assert mech.latent_similarity(sae, "decoder")[1, 9] > 0.999 and abs(both[1, 9]) < 1e-6
    x = torch.randn(16, D, generator=torch.Generator().manual_seed(5))
    events = sae.after_step(0, x, _output(sae, x, torch.ones(NF, dtype=torch.long)), None)
    assert events[0]["pairs"] == [[0, 8], [3, 10]]
    assert not sae.W_enc[:, [8, 10]].any() and not sae.W_dec[[8, 10]].any()
