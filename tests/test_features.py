"""Feature statistics against brute force over every activation, the exact row -> token map, the
stored statistics' validation, interventions against a hand-run forward, and SAEBench's
autointerp prompts and parsers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hsae_utils.evals.adapter import SAEAdapter
from hsae_utils.features import stats as fs
from hsae_utils.method.saes import ReLUSAE, ReLUSAEConfig

from .conftest import TINY_D

PARAMS = fs.StatsParams(n_top=5, n_per_interval=3, left=3, right=2, chunk=64)


def _relu_adapter(d_in: int, d_sae: int = 24, seed: int = 0, bias: float = 0.05) -> SAEAdapter:
    sae = ReLUSAE(ReLUSAEConfig(d_in=d_in, d_sae=d_sae), seed=seed)
    with torch.no_grad():
        sae.b_enc.fill_(bias)
        sae.b_enc[0] = -1e3  # a dead latent
    return SAEAdapter(sae, {"scale": 1.0})


def _synthetic(n_ctx=12, C=10, D=8, seed=0):
    """Tokens with special ids 0 at position 0 and sprinkled inside; one row per other token."""
    g = torch.Generator().manual_seed(seed)
    tokens_SC = torch.randint(1, 30, (n_ctx, C), generator=g)
    tokens_SC[:, 0] = 0
    tokens_SC[3, 5] = 0
    positions = torch.nonzero(tokens_SC != 0).numpy()
    x_ND = torch.randn(positions.shape[0], D, generator=g)
    return tokens_SC, positions, x_ND


@pytest.mark.parametrize("held", [True, False])
def test_stats_equal_brute_force_over_all_activations(one_thread, monkeypatch, held):
    """Latents held in memory (one step), or encoded again chunk by chunk (merged top-k)."""
    if not held:
        monkeypatch.setattr(fs, "MAX_CODE_BYTES", 0)
    tokens_SC, positions, x_ND = _synthetic()
    adapter = _relu_adapter(x_ND.shape[1])
    nb_ids, _ = fs.decoder_neighbours(adapter.decoder_rows(), PARAMS.n_neighbours)
    st = fs.latent_stats(adapter.encode, x_ND, nb_ids, PARAMS, progress=False)
    assert (st["codes"].z_NF is not None) == held
    Z = adapter.encode(x_ND).float()  # every activation, the brute force
    fired = Z > 0
    assert torch.equal(st["count_F"], fired.sum(0))
    assert torch.allclose(st["max_F"], Z.max(0).values)
    assert st["count_F"][0] == 0 and (st["top_rows_KF"][:, 0] == -1).all()  # dead: no contexts
    for f in range(1, Z.shape[1]):
        nz = Z[fired[:, f], f]
        n = min(PARAMS.n_top, nz.numel())
        order = Z[:, f].argsort(descending=True)[:n]
        assert torch.equal(st["top_rows_KF"][:n, f], order)
        assert torch.allclose(st["top_vals_KF"][:n, f], Z[order, f])
        width = float(Z[:, f].max()) / fs.FINE_BINS
        for q, got in zip(st["quantile_levels"].tolist(), st["quantiles_FQ"][f].tolist()):
            ref = float(torch.quantile(nz, q, interpolation="lower"))
            hi = float(torch.quantile(nz, q, interpolation="higher"))
            assert ref - 2 * width <= got <= hi + 2 * width, (f, q)
        for k, j in enumerate(nb_ids[f].tolist()):  # co-firing counts
            assert st["cofire_FK"][f, k] == (fired[:, f] & fired[:, j]).sum()
        assert int(st["fine_hist_FB"][f].sum()) == int(fired[:, f].sum())
    # each interval sample fires, in its quantile interval (to one fine bin)
    bounds = fs.hist_quantiles(
        st["fine_hist_FB"], st["max_F"], torch.tensor(PARAMS.intervals[1:-1])
    )
    lo = torch.cat([torch.zeros(Z.shape[1], 1), bounds], 1)
    hi = torch.cat([bounds, st["max_F"][:, None]], 1)
    for i in range(len(PARAMS.intervals) - 1):
        for r, f in torch.nonzero(st["sample_rows_IJF"][i] >= 0).tolist():
            row = int(st["sample_rows_IJF"][i, r, f])
            assert lo[f, i] - 1e-6 <= Z[row, f] and Z[row, f] > 0
            assert Z[row, f] < hi[f, i] + 1e-6 or i == len(PARAMS.intervals) - 2


@pytest.mark.parametrize("held", [True, False])
def test_contexts_map_back_to_the_exact_tokens(one_thread, monkeypatch, held):
    if not held:
        monkeypatch.setattr(fs, "MAX_CODE_BYTES", 0)
    tokens_SC, positions, x_ND = _synthetic()
    adapter = _relu_adapter(x_ND.shape[1])
    nb_ids, _ = fs.decoder_neighbours(adapter.decoder_rows(), PARAMS.n_neighbours)
    st = fs.latent_stats(adapter.encode, x_ND, nb_ids, PARAMS, progress=False)
    ctx = fs.contexts(st, adapter.encode, x_ND, positions, tokens_SC, lambda t: f"t{t}", PARAMS)
    Z = adapter.encode(x_ND).float()
    row_of = {tuple(p): r for r, p in enumerate(positions.tolist())}
    n_checked = 0
    for f, cs in enumerate(ctx):
        for c in cs:
            s, p, r = c["seq"], c["pos"], c["row"]
            assert tuple(positions[r]) == (s, p)
            assert c["tokens"][c["center"]] == f"t{int(tokens_SC[s, p])}"
            assert c["act"] == pytest.approx(float(Z[r, f]), abs=1e-4)
            for k, a in enumerate(c["acts"]):  # every shown token's activation, 0 without a row
                q = p - c["center"] + k
                assert c["tokens"][k] == f"t{int(tokens_SC[s, q])}"
                rr = row_of.get((s, q))
                assert a == pytest.approx(0.0 if rr is None else float(Z[rr, f]), abs=1e-4)
                n_checked += 1
    assert n_checked > 100


def test_row_positions_are_exact_with_massive_activations_dropped(
    tiny_model, tmp_path, monkeypatch
):
    """A cache that dropped 'massive' rows (factor 1.05: about half the tokens): the map found
    by recomputing the model batches points every row at the token whose residual it holds."""
    from hsae_utils.config import get_profile
    from hsae_utils.data import activations
    from hsae_utils.data.forward import layer_resid
    from hsae_utils.features.rows import row_positions

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    P = get_profile(
        "smoke",
        model_name="tiny",
        n_layers=4,
        d_model=TINY_D,
        layer=1,
        context_size=16,
        n_train_tokens=16 * 4,
        n_valid_tokens=16 * 6,
        n_norm_tokens=32,
        shard_tokens=64,
        model_batch_size=2,
        n_eval_contexts=4,
        massive_norm_factor=1.05,
    )
    words = "the cat sat on the mat and the dog ran . paris is the capital of france ,".split()
    texts = lambda: (" ".join(words[i:] + words[:i]) for i in range(10**6))  # noqa: E731
    train = activations.build_cache(P, "train", tiny_model, texts, "tiny", "c")
    norm = activations.ActivationStore(train).normalizer
    folder = activations.build_cache(
        P, "validation", tiny_model, texts, "tiny", "c", normalizer=norm
    )
    store = activations.ActivationStore(folder)
    assert store.manifest["n_massive_dropped"] > 0
    with pytest.raises(ValueError, match="needs the model"):
        row_positions(P)
    pos = row_positions(P, tiny_model, cache_root=tmp_path / "eval_cache")
    resid = layer_resid(tiny_model, store.tokens(), P.layer)  # independent: all at once
    torch.testing.assert_close(resid[pos[:, 0], pos[:, 1]], store.read_all(), rtol=1e-4, atol=1e-4)
    assert np.array_equal(row_positions(P, None, tmp_path / "eval_cache"), pos)  # stored map


def test_stats_are_stored_validated_and_rebuilt_when_damaged(tiny_model, tiny_caches, capsys):
    from hsae_utils.features.inspect import resolve_sae, sae_stats, stats_folder
    from hsae_utils.method.checkpoint import save_sae

    P, norm = tiny_caches
    cfg = ReLUSAEConfig(
        d_in=TINY_D, d_sae=16, hook_name=P.hook_name, normalization=norm.to_dict() | {"mean": None}
    )
    sae = ReLUSAE(cfg, seed=1)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    save_sae(sae, P.sae_dir / "relu_l1" / "seed42", metadata={"run": "relu_l1", "seed": 42})
    data = sae_stats("relu_l1/seed42", P, model=tiny_model, params=PARAMS, progress=False)
    folder = stats_folder(resolve_sae("relu_l1/seed42", P), P)
    assert data["sae"]["d_sae"] == 16 and len(data["latents"]) == 16
    from hsae_utils.data.activations import ActivationStore

    assert data["sae"]["n_tokens"] == ActivationStore(P.cache_dir / "validation").n_tokens
    json.dumps(data)  # JSON-serializable
    lat = max(data["latents"], key=lambda r: r["density"])
    assert len(lat["top_logits"]) == 10 and lat["top_logits"][0][1] >= lat["top_logits"][-1][1]
    from hsae_utils.features.inspect import stats_problems

    assert stats_problems(folder) == []  # notebook 12's skip-check
    mtime = (folder / "data.json").stat().st_mtime_ns
    assert sae_stats("relu_l1/seed42", P, model=tiny_model, params=PARAMS) == data  # reused
    assert (folder / "data.json").stat().st_mtime_ns == mtime
    (folder / "data.json").write_text((folder / "data.json").read_text()[:-20])  # damage
    assert "fails its checksum" in stats_problems(folder)[0]
    assert sae_stats("relu_l1/seed42", P, model=tiny_model, params=PARAMS, progress=False) == data
    assert "fails its checksum" in capsys.readouterr().out
    other = fs.StatsParams(n_top=3, n_per_interval=2, left=3, right=2, chunk=64)
    again = sae_stats("relu_l1/seed42", P, model=tiny_model, params=other, progress=False)
    assert "another SAE, data or parameters" in capsys.readouterr().out
    assert len([c for c in again["latents"][lat["id"]]["contexts"] if c["group"] == "top"]) <= 3


def test_interventions_equal_the_rest_of_the_model_run_by_hand(tiny_model, one_thread):
    from hsae_utils.data.forward import layer_resid, logits_from_layer
    from hsae_utils.features.interventions import intervene

    layer, hook = 1, "blocks.1.hook_resid_post"
    adapter = SAEAdapter(ReLUSAE(ReLUSAEConfig(d_in=TINY_D, d_sae=16), seed=3), {"scale": 2.0})
    with torch.no_grad():
        adapter.sae.b_enc.fill_(0.5)
    tokens = torch.randint(2, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    resid = layer_resid(tiny_model, tokens, layer)
    d_raw = (adapter.sae.W_dec[4] / 2.0).detach()  # unit normalized-space row, raw units

    steer = intervene(tiny_model, adapter, tokens, 4, hook, mode="steer", coef=3.0)
    by_hand = resid.clone()
    by_hand[:, 1:] += 3.0 * d_raw
    ref = logits_from_layer(tiny_model, by_hand, layer).log_softmax(-1)
    torch.testing.assert_close(steer.logp_edit_BSV, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        steer.logp_clean_BSV,
        logits_from_layer(tiny_model, resid, layer).log_softmax(-1),
        rtol=1e-4,
        atol=1e-4,
    )

    ablate = intervene(tiny_model, adapter, tokens, 4, hook, mode="ablate")
    z = adapter.encode(resid)[..., 4]  # its contribution: z_4 d_4, subtracted
    assert (z[:, 1:] > 0).any()
    by_hand = resid.clone()
    by_hand[:, 1:] -= z[:, 1:, None] * d_raw
    ref = logits_from_layer(tiny_model, by_hand, layer).log_softmax(-1)
    torch.testing.assert_close(ablate.logp_edit_BSV, ref, rtol=1e-4, atol=1e-4)
    assert ablate.delta_BSV[:, 1:].abs().max() > 1e-4  # it changed something


def test_autointerp_prompts_and_parsing_are_sae_benchs(monkeypatch):
    from sae_bench.evals.autointerp.main import Example

    from hsae_utils.features import autointerp as ai

    for name in ai.ENV:
        monkeypatch.delenv(name, raising=False)
    assert not ai.autointerp_configured()
    with pytest.raises(RuntimeError, match="HSAE_AUTOINTERP_BASE_URL"):
        ai.run_autointerp({"latents": []}, [], {}, torch.zeros(1, 1), str)

    tokens_SC = torch.arange(60).view(3, 20)
    words = {i: f" w{i}" for i in range(60)}

    def ctx(s, p, act):
        tokens = [words[int(t)] for t in tokens_SC[s, p - 2 : p + 2]]
        return {
            "group": "top",
            "tokens": tokens,
            "acts": [0.0, 0.0, act, 0.0],
            "center": 2,
            "act": act,
            "row": 0,
            "seq": s,
            "pos": p,
        }

    latent = {
        "id": 7,
        "max_act": 4.0,
        "contexts": [ctx(0, 5, 4.0), ctx(1, 6, 3.0), ctx(2, 7, 2.0), ctx(0, 12, 1.0)],
    }
    negatives = [(tokens_SC[2, 10:14].tolist(), [0.0] * 4)]
    p = ai.build_prompts(latent, negatives, tokens_SC, lambda t: words[t], seed=0)
    gen = p.generation[1]["content"]
    assert p.generation[0]["role"] == "system" and "<< ... >>" in p.generation[0]["content"]
    # the activating token of each generation example is marked the way SAEBench marks it
    assert gen.count("<<") == 2 and gen.count(">>") == 2
    ref = Example(tokens_SC[0, 3:7].tolist(), [0.0, 0.0, 4.0, 0.0], 0.04, ai._Tokens(words.get))
    assert ref.to_str(mark_toks=True) == " w3 w4<< w5>> w6"
    scoring = p.scoring("the letter w")[1]["content"]
    assert "this neuron fires on the letter w" in scoring and "<<" not in scoring
    assert len(p.scoring_examples) == 3
    truth = [i + 1 for i, ex in enumerate(p.scoring_examples) if ex.is_active]
    assert len(truth) == 2
    assert p.ai.parse_predictions(", ".join(map(str, truth))) == truth
    assert p.ai.score_predictions(truth, p.scoring_examples) == 1.0
    assert p.ai.score_predictions([], p.scoring_examples) == pytest.approx(1 / 3)
    assert p.ai.parse_predictions("None") == [] and p.ai.parse_predictions("two") is None
    assert p.ai.parse_explanation("This neuron activates on the letter w.") == "the letter w"


def test_showcase_reads_the_absorption_table_and_marks_the_token(tmp_path):
    from hsae_utils.features import showcase

    csv = tmp_path / "absorption_per_letter.csv"
    csv.write_text(
        "run,config,seed,letter,probe_f1,included,main_latents\n"
        "a/seed42,a,42,b,0.9,True,7 3\n"
        "a/seed42,a,42,c,0.95,True,5\n"
        "a/seed42,a,42,d,0.99,False,1\n"
        "b/seed42,b,42,b,0.9,True,2\n"
        "b/seed42,b,42,c,0.95,True,\n"
    )
    assert showcase.main_latents(csv, "a/seed42") == {"b": [7, 3], "c": [5]}
    assert showcase.shared_letters(csv, ["a/seed42", "b/seed42"]) == ["b"]
    rec = {
        "id": 7,
        "density": 0.5,
        "max_act": 2.0,
        "quantiles": {"0.5": 1.0},
        "top_logits": [],
        "bottom_logits": [],
        "contexts": [
            {
                "group": "top",
                "tokens": ["a", " b", "\n"],
                "acts": [0, 2.0, 0],
                "center": 1,
                "act": 2.0,
                "row": 0,
                "seq": 0,
                "pos": 1,
            }
        ],
    }
    assert "a[[ b]]↵" in showcase.latent_text(rec, "test")
