"""Core metrics, the splice and the model-side cache (hsae_utils.evals), on the tiny model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hsae_utils import evals as ev
from hsae_utils.data.forward import layer_resid, resid_at_layer

from .conftest import TINY_D

LAYER = 1
SPECIAL = [0, 1]  # <|endoftext|> (BOS / boundary) and <unk> of the tiny tokenizer


class FnSAE(torch.nn.Module):
    """A hand-made "SAE" in normalized space: z = enc(x), xhat = dec(z)."""

    def __init__(self, d, enc, dec, d_sae=None, scale=1.0):
        super().__init__()
        self.W_dec = torch.nn.Parameter(torch.eye(d_sae or d, d))
        self.enc, self.dec = enc, dec
        self.cfg = SimpleNamespace(normalization={"scale": scale, "center": False, "mean": None})

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z)


def identity_sae(scale=0.5):  # a power of two: x * s / s is exact
    return FnSAE(TINY_D, lambda x: x, lambda z: z, scale=scale)


def zero_sae():
    return FnSAE(TINY_D, lambda x: torch.zeros_like(x), lambda z: torch.zeros_like(z))


def noisy_sae(seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.eye(TINY_D) + 0.3 * torch.randn(TINY_D, TINY_D, generator=g)
    return FnSAE(TINY_D, lambda x: torch.relu(x @ W), lambda z: z @ W.T)


def contexts(n=6, s=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(2, 40, (n, s), generator=g)
    toks[:, 0] = 0  # BOS
    toks[1, 7] = 0  # a document boundary inside a context
    toks[2, 3] = 1  # an <unk>
    return toks


@pytest.fixture(scope="module")
def splice(tiny_model):
    return ev.build_splice_data(
        tiny_model, contexts(), LAYER, SPECIAL, batch_contexts=4, progress=False
    )


def test_layer_resid_matches_the_bridge(tiny_model):
    toks = contexts()
    torch.testing.assert_close(
        layer_resid(tiny_model, toks, LAYER), resid_at_layer(tiny_model, toks, LAYER)
    )


def test_identity_sae_is_perfect(tiny_model, splice):
    adapter = ev.SAEAdapter(identity_sae())
    out = ev.splice_metrics(
        tiny_model, splice, {"id": adapter}, LAYER, batch_contexts=4, progress=False
    )["id"]
    assert abs(out["kl_div_with_sae"]) < 1e-6
    assert out["kl_div_score"] == pytest.approx(1.0, abs=1e-5)
    assert out["ce_loss_score"] == pytest.approx(1.0, abs=1e-5)
    assert out["ce_loss_with_sae"] == pytest.approx(out["ce_loss_without_sae"], abs=1e-5)
    x = splice.resid_NSD[splice.keep_NS]
    rec = ev.reconstruction_metrics(adapter, x)
    assert rec["explained_variance_legacy"] == pytest.approx(1.0, abs=1e-6)
    assert rec["frac_variance_explained"] == pytest.approx(1.0, abs=1e-6)
    assert rec["mse"] == pytest.approx(0.0, abs=1e-8)
    assert rec["cossim"] == pytest.approx(1.0, abs=1e-6)
    assert rec["l2_ratio"] == pytest.approx(1.0, abs=1e-6)


def test_zero_ablation_recovers_nothing(tiny_model, splice):
    """With the `non_special` baseline, an all-zero SAE is the ablation; with the default (every
    position zeroed, BOS included, as SAELens / SAEBench) it keeps BOS, so the two differ."""
    zero = {"zero": ev.SAEAdapter(zero_sae())}
    default = ev.splice_metrics(tiny_model, splice, zero, LAYER, progress=False)["zero"]
    assert abs(default["kl_div_with_sae"] - default["kl_div_with_ablation"]) > 1e-4
    ours = ev.build_splice_data(
        tiny_model, contexts(), LAYER, SPECIAL, progress=False, ablation="non_special"
    )
    out = ev.splice_metrics(tiny_model, ours, zero, LAYER, progress=False)["zero"]
    assert out["ce_loss_score"] == pytest.approx(0.0, abs=1e-5)
    assert out["kl_div_score"] == pytest.approx(0.0, abs=1e-5)
    assert out["kl_div_with_sae"] == pytest.approx(out["kl_div_with_ablation"], rel=1e-5)
    assert out["ce_loss_with_ablation"] != out["ce_loss_without_sae"]  # (random model: any sign)


def test_special_tokens_keep_their_activation_and_leave_the_averages(tiny_model, splice):
    """Manual splice: replace non-special positions only; average KL / CE over them only."""
    adapter = ev.SAEAdapter(noisy_sae())
    got = ev.splice_metrics(
        tiny_model, splice, {"n": adapter}, LAYER, batch_contexts=4, progress=False
    )["n"]
    toks, keep = splice.tokens_NS, splice.keep_NS
    assert not keep[:, 0].any() and not keep[1, 7] and not keep[2, 3]
    assert keep.sum() == keep.numel() - toks.shape[0] - 2

    # independent of `logits_from_layer`: the model's full forward with a hook at the layer
    def splice_hook(acts, hook):
        xhat, *_ = adapter.reconstruct(acts)
        return torch.where(keep[..., None], xhat, acts)

    with torch.no_grad():
        lp_c = torch.log_softmax(tiny_model(toks).float(), -1)
        lp_s = torch.log_softmax(
            tiny_model.run_with_hooks(
                toks, fwd_hooks=[(f"blocks.{LAYER}.hook_resid_post", splice_hook)]
            ).float(),
            -1,
        )
    kl = (lp_c.exp() * (lp_c - lp_s)).sum(-1)
    ce = -lp_s[:, :-1].gather(-1, toks[:, 1:, None])[..., 0]
    ce_mask = keep[:, :-1]
    assert got["kl_div_with_sae"] == pytest.approx(kl[keep].mean().item(), rel=1e-4)
    assert got["ce_loss_with_sae"] == pytest.approx(ce[ce_mask].mean().item(), rel=1e-5)
    # including the special positions would give different numbers
    assert abs(kl.mean().item() - kl[keep].mean().item()) > 1e-6
    clean_ce = -lp_c[:, :-1].gather(-1, toks[:, 1:, None])[..., 0]
    assert got["ce_loss_without_sae"] == pytest.approx(clean_ce[ce_mask].mean().item(), rel=1e-5)


def test_reconstruction_formulas_by_hand():
    torch.manual_seed(0)
    x = torch.randn(500, 8) * 3 + 1.5
    half = FnSAE(8, lambda v: v, lambda z: 0.5 * z, scale=0.5)
    rec = ev.reconstruction_metrics(ev.SAEAdapter(half), x, batch_size=128)
    xd = x.double()
    err = 0.5 * xd  # raw-space error of xhat = 0.5 x
    assert rec["frac_variance_explained"] == pytest.approx(1 - 0.25, abs=1e-9)
    legacy = (1 - err.pow(2).sum(1) / (xd - xd.mean(0)).pow(2).sum(1)).mean().item()
    assert rec["explained_variance_legacy"] == pytest.approx(legacy, rel=1e-9)
    assert rec["mse_raw"] == pytest.approx(err.pow(2).sum(1).mean().item(), rel=1e-9)
    assert rec["mse_norm"] == pytest.approx(0.25 * rec["mse_raw"], rel=1e-9)  # normalized: x 0.5^2
    assert rec["cossim"] == pytest.approx(1.0, abs=1e-9)
    assert rec["l2_ratio"] == pytest.approx(0.5, abs=1e-9)
    assert rec["relative_reconstruction_bias"] == pytest.approx(0.5, abs=1e-9)


def test_sparsity_and_alive_latents():
    x = torch.tensor([[1.0, -1.0, 0.0, 2.0], [0.5, 0.0, 0.0, -3.0]])
    sae = FnSAE(4, torch.relu, lambda z: z)
    rec = ev.reconstruction_metrics(ev.SAEAdapter(sae), x)
    assert rec["l0"] == pytest.approx(1.5)  # 2 and 1 active latents
    assert rec["l1"] == pytest.approx((3.0 + 0.5) / 2)
    assert rec["alive"] == 2 and rec["dead"] == 2 and rec["frac_alive"] == 0.5


def test_splice_cache_is_written_once_and_reused(tiny_model, tmp_path):
    toks = contexts(n=3, s=10, seed=1)
    a = ev.build_splice_data(
        tiny_model, toks, LAYER, SPECIAL, cache_root=tmp_path, fingerprint="tiny", progress=False
    )
    assert not a.reused and (a.folder / "manifest.json").exists()
    b = ev.build_splice_data(
        tiny_model, toks, LAYER, SPECIAL, cache_root=tmp_path, fingerprint="tiny", progress=False
    )
    assert b.reused and b.folder == a.folder
    torch.testing.assert_close(a.resid_NSD, b.resid_NSD)
    torch.testing.assert_close(a.kl_zero_NS, b.kl_zero_NS)
    # other data -> another key
    c = ev.build_splice_data(
        tiny_model,
        contexts(n=3, s=10, seed=2),
        LAYER,
        SPECIAL,
        cache_root=tmp_path,
        fingerprint="tiny",
        progress=False,
    )
    assert not c.reused and c.folder != a.folder
    # an interrupted write (no manifest) is not reused
    (a.folder / "manifest.json").unlink()
    assert not ev.build_splice_data(
        tiny_model, toks, LAYER, SPECIAL, cache_root=tmp_path, fingerprint="tiny", progress=False
    ).reused


def test_find_saes_reads_exports(tmp_path):
    from hsae_utils.method.checkpoint import save_sae
    from hsae_utils.method.saes import TopKSAE, TopKSAEConfig

    for name, seed in (("topk", 42), ("topk", 43), ("stage1_linear_sparsity", 42)):
        sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=16, k=2), seed=seed)
        save_sae(
            sae,
            tmp_path / name / f"seed{seed}",
            metadata={"run": name, "seed": seed, "label": name.upper()},
        )
    (tmp_path / "incomplete" / "seed1").mkdir(parents=True)
    runs = ev.find_saes(tmp_path)
    assert [(r.config, r.seed) for r in runs] == [
        ("topk", 42),
        ("topk", 43),
        ("stage1_linear_sparsity", 42),
    ]
    assert runs[0].run == "topk/seed42" and runs[0].label == "TOPK"
    assert runs[0].architecture == "TopKSAE"
    assert ev.find_saes(tmp_path / "missing") == []


def test_evaluate_profile_end_to_end(tiny_model, tiny_caches):
    """Activation cache -> trained-like exports -> tidy results, on the tiny model (core only)."""
    from hsae_utils.method.checkpoint import save_sae
    from hsae_utils.method.saes import ReLUSAE, ReLUSAEConfig

    P, norm = tiny_caches
    assert P.layer == LAYER
    for seed in (42, 43):
        cfg = ReLUSAEConfig(d_in=TINY_D, d_sae=48, normalization=norm.to_dict() | {"mean": None})
        save_sae(
            ReLUSAE(cfg, seed=seed),
            P.sae_dir / "relu_l1" / f"seed{seed}",
            metadata={"run": "relu_l1", "seed": seed},
        )
    res = ev.evaluate_profile(P, model=tiny_model, families=("core",), progress=False)
    df = res.results
    assert list(df.columns) == ["run", "config", "seed", "metric", "value"]
    assert set(df["run"]) == {"relu_l1/seed42", "relu_l1/seed43"}
    for metric in (
        "explained_variance_legacy",
        "frac_variance_explained",
        "mse",
        "l0",
        "frac_alive",
        "kl_div_score",
        "ce_loss_score",
        "ce_loss_without_sae",
    ):
        assert (df["metric"] == metric).sum() == 2, metric
    assert np.isfinite(df["value"]).all()
    assert set(res.timer.per_sae) == {"relu_l1/seed42", "relu_l1/seed43"}
    assert "model-side" in res.timer.summary()
    paths = ev.save_results(res, P.results_dir, P)
    rows = json.loads(paths["json"].read_text())["rows"]
    assert len(rows) == len(df)
    summary = res.summary(["l0", "kl_div_score"])
    assert list(summary.index) == ["relu_l1"]
    # the second evaluation reuses the model-side cache
    res2 = ev.evaluate_profile(P, model=tiny_model, families=("core",), progress=False)
    assert any("reused" in n for n in res2.notes)
    np.testing.assert_allclose(res2.results["value"], df["value"], rtol=1e-6)


def test_bit_identical_saes_are_evaluated_once(tiny_model, tiny_caches):
    """Two exports of the same weights whose configs differ only in a training mechanism's
    switch (stage 1 and stage 2 when nothing was resampled) are evaluated once; the twin gets the
    same rows under its own name. A different SAE is evaluated on its own."""
    from hsae_utils.method.checkpoint import save_sae
    from hsae_utils.method.saes import HierarchicalSAE, HierarchicalSAEConfig

    P, norm = tiny_caches
    kw = dict(d_in=TINY_D, d_sae=48, normalization=norm.to_dict() | {"mean": None})
    cfg1 = HierarchicalSAEConfig.for_stage(1, **kw)
    cfg2 = HierarchicalSAEConfig.for_stage(2, **kw)
    for name, cfg, seed in (("stage1", cfg1, 42), ("stage2", cfg2, 42), ("stage2", cfg2, 43)):
        save_sae(
            HierarchicalSAE(cfg, seed=seed),
            P.sae_dir / name / f"seed{seed}",
            metadata={"run": name, "seed": seed},
        )
    res = ev.evaluate_profile(P, model=tiny_model, families=("core",), progress=False)
    assert any("stage2/seed42 = stage1/seed42" in n for n in res.notes)
    assert set(res.timer.per_sae["stage2/seed42"]) == {"load"}  # nothing but the load
    df = res.results.pivot_table(index="metric", columns="run", values="value")
    assert df["stage2/seed42"].equals(df["stage1/seed42"])
    assert not df["stage2/seed43"].equals(df["stage1/seed42"])
    # the same numbers as evaluating the twin alone
    alone = ev.evaluate_profile(
        P,
        runs=[r for r in ev.find_saes(P.sae_dir) if r.run == "stage2/seed42"],
        model=tiny_model,
        families=("core",),
        progress=False,
    ).results.set_index("metric")["value"]
    np.testing.assert_array_equal(alone.loc[df.index].to_numpy(), df["stage2/seed42"].to_numpy())


def test_no_saes_is_not_an_error(tmp_path, monkeypatch):
    from hsae_utils.config import get_profile

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    res = ev.evaluate_profile(get_profile("smoke"), progress=False)
    assert res.results.empty and res.notes == ["no SAEs found"]


def test_splice_timing_keeps_each_saes_time_out_of_the_model_side(tiny_model, splice, monkeypatch):
    """Each SAE's reconstruction is timed before the clean pass starts; the model-side clock must
    not subtract it (it did: the clean time shrank, then went negative, as SAEs were added). A
    clock that each SAE's encode moves 100 s ahead makes the check independent of the load."""
    import time

    from hsae_utils.evals import core
    from hsae_utils.timing import Timer

    skipped = [0.0]
    monkeypatch.setattr(core.time, "perf_counter", lambda: time.monotonic() + skipped[0])

    def slow(x):
        skipped[0] += 100.0
        return x

    adapters = {f"slow{i}": ev.SAEAdapter(FnSAE(TINY_D, slow, lambda z: z)) for i in range(3)}
    timer = Timer()
    ev.splice_metrics(
        tiny_model, splice, adapters, LAYER, batch_contexts=6, timer=timer, progress=False
    )
    (clean_s,) = timer.model_side.values()
    assert 0 < clean_s < 100
    for name in adapters:  # one batch: one 100 s "reconstruction" per SAE, charged to the SAE
        assert 100 <= timer.per_sae[name]["splice KL/CE"] < 200


def test_adapter_identity_reads_every_tensor_and_the_config():
    """Equal for a copy; different when a scalar buffer (BatchTopK's threshold), k or a weight
    differs."""
    import copy

    from hsae_utils.evals.adapter import SAEAdapter, adapter_identity
    from hsae_utils.method.saes import BatchTopKSAE, BatchTopKSAEConfig

    sae = BatchTopKSAE(BatchTopKSAEConfig(d_in=8, d_sae=16, k=2), seed=0)
    key = adapter_identity(SAEAdapter(sae))
    assert key == adapter_identity(SAEAdapter(copy.deepcopy(sae)))
    other = copy.deepcopy(sae)
    with torch.no_grad():
        other.threshold.add_(1e-3)
    assert adapter_identity(SAEAdapter(other)) != key
    assert (
        adapter_identity(
            SAEAdapter(BatchTopKSAE(BatchTopKSAEConfig(d_in=8, d_sae=16, k=3), seed=0))
        )
        != key
    )
