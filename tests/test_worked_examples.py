"""The worked examples of notebooks 03-07 (hsae_utils.analysis.report.worked_examples) and the
sentences read from the stage runs (stage_traces), checked against independent computations."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hsae_utils.analysis.report import stage_traces
from hsae_utils.analysis.report import worked_examples as examples


def test_lambda_schedule_is_eq3_with_lambda0_one_over_sqrt_k():
    sched = examples.lambda_schedule(576, 500)["lambda_t"].to_numpy()
    lam0 = 1 / 24  # 1/sqrt(576)
    assert sched[0] == pytest.approx(lam0) and sched[250] == pytest.approx(lam0 / 2)
    assert sched[-1] == pytest.approx(lam0 / 500)
    assert np.diff(sched) == pytest.approx(np.full(499, -lam0 / 500))


def test_dead_latent_is_resampled_from_a_high_loss_input():
    toy = examples.dead_latent_example(dead=2, n_loud=4)
    assert [(e["event"], e["reset"]) for e in toy["events"]] == [("resample", [2])]
    assert toy["rate_before"] == 0.0
    assert toy["loss_rank"] <= 4  # drawn from the 4 inputs with 16x the squared error
    assert toy["cos_with_input"] == pytest.approx(1.0, abs=1e-5)
    before, after = toy["table"]["before"], toy["table"]["after"]
    assert before["fires on (of a fixed batch)"].startswith("0 /")
    assert not after["fires on (of a fixed batch)"].startswith("0 /")
    assert after["encoder bias"] == 0.0
    assert after["|encoder column|"] == pytest.approx(0.2 * toy["mean_enc_norm_others"], abs=1e-3)


def test_window_rate_is_the_mean_of_the_last_100_step_rates():
    df = examples.window_example(steps=300, window=100)
    d = df[df["latent"] == examples.TOY_STREAM[1][0]]
    rolling = d["step_rate"].rolling(100, min_periods=1).sum().to_numpy() / 100  # zeros before
    assert d["window_rate"].to_numpy() == pytest.approx(rolling, abs=1e-6)
    # judged only with a full window, below 0.01: as computed independently
    expect = (rolling < 0.01) & (d["step"].to_numpy() >= 100)
    assert (d["dead_window"].to_numpy() == expect).all()
    first = examples.first_flagged(df)
    never, steady, drop = (
        first.loc[name]
        for name, _, _ in (examples.TOY_STREAM[2], examples.TOY_STREAM[0], examples.TOY_STREAM[1])
    )
    assert never.tolist() == [100, 100]  # both rules, once the window is full
    assert steady.tolist() == ["-", "-"]
    assert 200 < drop.iloc[0] < 280 and drop.iloc[1] == "-"  # only the window sees 0.4 %


def test_alpha_curve_is_eq5():
    curve = examples.alpha_curve()
    expect = np.clip(2.5 / curve["l_recon"].to_numpy(), 0.1, 2.0)
    assert curve["alpha_t"].to_numpy() == pytest.approx(expect, rel=1e-6)


def test_merge_example_merges_exactly_the_pairs_above_the_threshold():
    m = examples.merge_example()
    sim = m["similarity"].to_numpy()
    assert np.allclose(np.diag(sim), 1.0, atol=1e-3)
    above = [(i, j) for i in range(6) for j in range(i + 1, 6) if sim[i, j] > 0.9]
    assert above == [(1, 4)] and m["pairs"] == [[1, 4]] and m["freed"] == [4]
    assert sim[2, 5] < 0.9  # the near miss stays
    merged = m["merged"]  # the renormalized average is equally close to both rows
    assert merged["cos(merged row, old row i)"] == pytest.approx(
        merged["cos(merged row, old row j)"], abs=1e-5
    )
    assert merged["|merged row|"] == pytest.approx(1.0, abs=1e-5)


def _run(seed, events=(), log=()):
    return SimpleNamespace(seed=seed, events=list(events), log=list(log))


def test_events_in_words_say_no_events_and_what_it_means():
    text = stage_traces.events_in_words([_run(42), _run(43)], acts_by="merge", previous="stage 4")
    assert "seed 42: no resample or merge events" in text and "stage 4" in text
    text = stage_traces.events_in_words(
        [_run(42, [{"event": "resample", "step": 100, "n_latents": 3}])], acts_by="resample"
    )
    assert "1 resample event(s), 3 latent(s) (steps 100)" in text and "never" not in text


def test_alpha_in_words_names_the_clamp_it_sits_at():
    low = [{"step": s, "alpha_t": float(np.float32(0.1))} for s in range(8)]
    low.append({"step": 9, "alpha_t": 0.5})
    text = stage_traces.alpha_in_words([_run(42, log=low)])  # logged float32 values count too
    assert "lower clamp 0.1 on 89%" in text and "lower clamp on most steps" in text
    mid = [{"step": s, "alpha_t": 0.3} for s in range(8)]
    text = stage_traces.alpha_in_words([_run(42, log=mid)])
    assert "median 0.3" in text and "between its clamps" in text


def test_max_decoder_cosine_of_a_saved_sae(tmp_path):
    from hsae_utils.method.checkpoint import save_sae
    from hsae_utils.method.saes.relu import ReLUSAE, ReLUSAEConfig

    sae = ReLUSAE(ReLUSAEConfig(d_in=8, d_sae=5, l1_coefficient=0.1), seed=0)
    with torch.no_grad():
        sae.W_dec[3] = torch.nn.functional.normalize(sae.W_dec[0] + 0.1 * sae.W_dec[1], dim=0)
    save_sae(sae, tmp_path)
    got = stage_traces.max_decoder_cosine(tmp_path)
    w = sae.W_dec.detach().numpy()
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    sim = w @ w.T
    np.fill_diagonal(sim, -1)
    assert got == pytest.approx(sim.max(1), abs=1e-5)
    assert "1 latent(s) above 0.9" not in stage_traces.max_cosine_in_words({0: got})
    assert "2 latent(s) above 0.9" in stage_traces.max_cosine_in_words({0: got})


def test_logged_lambda_lies_on_the_schedule_plotted():
    """A run's log row at completed step s carries lambda_t of t = s - 1 (the trainer's
    convention); the figure places it there, on Eq. 3's line."""
    import matplotlib.pyplot as plt

    lam0 = 1 / 24
    log = [{"step": s, "lambda_t": lam0 * (1 - (s - 1) / 40)} for s in (10, 20, 40)]
    fig = examples.plot_lambda_schedule(576, 40, [log])
    line, dots = fig.axes[0].get_lines()
    sched = dict(zip(line.get_xdata(), line.get_ydata()))
    assert all(sched[x] == pytest.approx(y) for x, y in zip(dots.get_xdata(), dots.get_ydata()))
    plt.close(fig)
