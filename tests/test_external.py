"""SAELens-format SAEs in our evaluation (hsae_utils.evals.external): our exports loaded back through
sae_lens give our metrics; a hand-built JumpReLU folder (Gemma Scope's architecture) gives the
metrics of its hand-computed encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from hsae_utils import evals as ev
from hsae_utils.config import get_profile
from hsae_utils.evals import external
from hsae_utils.method.checkpoint import save_sae
from hsae_utils.method.saes import ARCHITECTURES

from .conftest import TINY_D
from .test_sae import D, _trained, batch

pytest.importorskip("sae_lens", reason="sae-lens is pinned in requirements.lock")

HOOK = "blocks.1.hook_resid_post"
NORM = {"scale": 0.37, "center": False, "mean": None}


def jumprelu_folder(folder, d_in=D, d_sae=24, seed=0, hook=HOOK):
    """A SAELens JumpReLU SAE written by hand, as Gemma Scope's releases are laid out."""
    g = torch.Generator().manual_seed(seed)
    w = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "b_enc": torch.randn(d_sae, generator=g) * 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=g) / d_sae**0.5,
        "b_dec": torch.randn(d_in, generator=g) * 0.1,
        "threshold": torch.rand(d_sae, generator=g) * 0.5 + 0.05,
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(w, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "jumprelu",
                "d_in": d_in,
                "d_sae": d_sae,
                "dtype": "float32",
                "device": "cpu",
                "apply_b_dec_to_input": True,
                "normalize_activations": "none",
                "metadata": {"hook_name": hook, "model_name": "tiny"},
            }
        )
    )
    return w


def jumprelu_by_hand(w, x):
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    z = pre * (pre > w["threshold"])
    return z, z @ w["W_dec"] + w["b_dec"]


def test_specs_parse_folders_and_hub_ids(tmp_path):
    jumprelu_folder(tmp_path / "gs" / "layer_1")
    specs = external.parse_specs(f" {tmp_path / 'gs' / 'layer_1'} , release-x:layer_1/width_16k,,")
    assert specs[0].folder == (tmp_path / "gs" / "layer_1").resolve()
    assert specs[0].name == "gs/layer_1"
    assert (specs[1].release, specs[1].sae_id) == ("release-x", "layer_1/width_16k")
    assert external.parse_specs("") == [] and external.parse_specs(None) == []
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        external.parse_spec(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        external.parse_spec(str(tmp_path / "empty"))


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_our_export_through_sae_lens_reconstructs_like_our_load(arch, tmp_path):
    sae = _trained(arch)
    save_sae(sae, tmp_path, metadata={"profile": "test"})
    run = ev.external_runs(str(tmp_path))[0]
    assert run.external and run.architecture.startswith("sae_lens:")
    ours = ev.load_adapter(ev.SAERun("ours", "ours", 0, "ours", arch, tmp_path))
    theirs = ev.load_adapter(run, normalization=NORM)
    x_raw = (batch(256, seed=3) + 0.5) / NORM["scale"]
    xh_o, z_o, xn_o, xhn_o = ours.reconstruct(x_raw)
    xh_t, z_t, xn_t, xhn_t = theirs.reconstruct(x_raw)
    assert torch.equal(z_o != 0, z_t != 0)
    s = NORM["scale"]  # exports carry the scale in the latents (raw units), decoder rows unit-norm
    torch.testing.assert_close(z_t * s, z_o, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xh_t, xh_o, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(xhn_t, xhn_o, rtol=1e-4, atol=1e-4)  # same normalized space
    m_o, m_t = ev.reconstruction_metrics(ours, x_raw), ev.reconstruction_metrics(theirs, x_raw)
    assert m_t.keys() == m_o.keys()
    m_t["l1"] *= s  # the one metric in latent units
    for k in m_o:
        assert m_t[k] == pytest.approx(m_o[k], rel=1e-4, abs=1e-6), k


def test_hand_built_jumprelu_folder_gives_its_own_metrics(tmp_path):
    w = jumprelu_folder(tmp_path)
    x = batch(512, seed=5) * 2 + 0.3
    z, xhat = jumprelu_by_hand(w, x)
    assert 0 < (z != 0).float().mean() < 1  # the thresholds bite
    scale = 0.5
    adapter = external.load_external_adapter(str(tmp_path), normalization={"scale": scale})
    xh, z_a, _, _ = adapter.reconstruct(x)
    torch.testing.assert_close(z_a, z, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xh, xhat, rtol=1e-5, atol=1e-5)
    m = ev.reconstruction_metrics(adapter, x)
    assert m["l0"] == pytest.approx((z != 0).sum(1).float().mean().item())
    mse_raw = (x - xhat).double().pow(2).sum(1).mean().item()
    assert m["mse_raw"] == pytest.approx(mse_raw, rel=1e-5)
    assert m["mse_norm"] == pytest.approx(mse_raw * scale**2, rel=1e-5)  # our normalized space
    assert m["d_sae"] == 24


def test_a_sae_for_another_hook_or_width_is_refused(tmp_path):
    P = get_profile("smoke", model_name="tiny", n_layers=4, d_model=D, layer=1)
    jumprelu_folder(tmp_path / "ok")
    assert len(ev.external_runs(str(tmp_path / "ok"), P)) == 1
    jumprelu_folder(tmp_path / "hook", hook="blocks.2.hook_resid_post")
    with pytest.raises(ValueError, match="hook 'blocks.2.hook_resid_post'"):
        ev.external_runs(str(tmp_path / "hook"), P)
    jumprelu_folder(tmp_path / "wide", d_in=D + 1)
    with pytest.raises(ValueError, match="d_in 17"):
        ev.external_runs(str(tmp_path / "wide"), P)


def test_evaluate_profile_scores_an_external_sae_like_our_own(tiny_model, tiny_caches, tmp_path):
    """Our export evaluated twice, natively and through SAELens, plus a JumpReLU folder: the
    same core metrics (reconstruction and the splice through the model) for the first two."""
    from hsae_utils.method.saes import ReLUSAE, ReLUSAEConfig

    P, norm = tiny_caches
    cfg = ReLUSAEConfig(
        d_in=TINY_D, d_sae=48, hook_name=P.hook_name, normalization=norm.to_dict() | {"mean": None}
    )
    sae = ReLUSAE(cfg, seed=42)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)  # some latents fire
    ours = save_sae(sae, P.sae_dir / "relu_l1" / "seed42", metadata={"run": "relu_l1", "seed": 42})
    jumprelu_folder(tmp_path / "public" / "jumprelu", d_in=TINY_D, hook=P.hook_name)
    runs = ev.find_saes(P.sae_dir) + ev.external_runs(
        f"{ours},{tmp_path / 'public' / 'jumprelu'}", P
    )
    assert [r.run for r in runs] == ["relu_l1/seed42", "ext:relu_l1/seed42", "ext:public/jumprelu"]

    res = ev.evaluate_profile(P, runs, model=tiny_model, families=("core",), progress=False)
    table = res.results.pivot_table(index="metric", columns="run", values="value")
    native, via = table["relu_l1/seed42"], table["ext:relu_l1/seed42"]
    for metric in (
        "explained_variance_legacy",
        "frac_variance_explained",
        "mse",
        "mse_raw",
        "l0",
        "frac_alive",
        "kl_div_with_sae",
        "ce_loss_with_sae",
        "ce_loss_score",
    ):
        assert via[metric] == pytest.approx(native[metric], rel=1e-4, abs=1e-6), metric
    assert native["l0"] > 0
    assert np.isfinite(table["ext:public/jumprelu"]).all()
    assert table["ext:public/jumprelu"]["d_sae"] == 24
    saved = ev.save_results(res, P.results_dir, P)
    runs_csv = saved["runs"].read_text()
    assert "ext:public/jumprelu" in runs_csv and str(tmp_path / "public" / "jumprelu") in runs_csv
