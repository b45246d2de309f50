import numpy as np
import pytest
import torch

from hsae_utils.config import get_profile
from hsae_utils.data import activations as acts
from hsae_utils.data.tokens import bos_token_id, iter_contexts
from hsae_utils.io import read_json, write_json_atomic

from .conftest import TINY_D, boot

WORDS = "the cat sat on the mat and a dog ran . paris is the capital of france ,".split()


def _texts(n_docs=80, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(5, 40))) for _ in range(n_docs)]


@pytest.fixture
def profile(tmp_path, monkeypatch):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    return get_profile(
        "smoke",
        model_name="tiny",
        n_layers=4,
        d_model=TINY_D,
        layer=2,
        context_size=16,
        n_train_tokens=16 * 24,
        n_valid_tokens=16 * 6,
        n_norm_tokens=100,
        shard_tokens=16 * 5,
        model_batch_size=3,
    )


def _build(profile, model, split="train", **kw):
    return acts.build_cache(
        profile, split, model, lambda: _texts(), "sha-model", "sha-corpus", **kw
    )


def test_contexts_start_with_bos_and_have_fixed_length(tiny_model):
    tok = tiny_model.tokenizer
    bos = bos_token_id(tok)
    rows = list(iter_contexts(_texts(10), tok, 16))
    assert rows and all(len(r) == 16 and r[0] == bos for r in rows)
    # Documents are joined by the boundary token, so the stream has bos between documents.
    assert any(bos in r[1:] for r in rows)


def test_cache_excludes_special_tokens_and_fits_normalizer(profile, tiny_model):
    folder = _build(profile, tiny_model)
    m = read_json(folder / "manifest.json")
    tokens = np.load(folder / "tokens.npy")
    assert tokens.shape == (24, 16) and (tokens[:, 0] == m["bos_token_id"]).all()
    n_special = np.isin(tokens, m["special_token_ids"]).sum()
    assert m["n_tokens"] == tokens.size - n_special
    assert m["complete"] and len(m["shards"]) == 5  # 24 contexts, 5 per shard
    store = acts.ActivationStore(folder)
    x = store.sample(store.n_tokens, seed=0)
    assert x.shape == (store.n_tokens, TINY_D)
    assert abs(x.pow(2).sum(-1).mean().item() / TINY_D - 1) < 0.1  # fitted on first 100 rows


def test_interrupted_cache_resumes_to_the_same_result(profile, tiny_model, monkeypatch):
    ref = _build(profile, tiny_model)
    ref_rows = [np.load(ref / s["file"]) for s in read_json(ref / "manifest.json")["shards"]]
    ref.rename(ref.parent / "ref")

    real_save, calls = np.save, {"n": 0}

    def crashing_save(f, arr):  # fail while writing the third shard
        if arr.ndim == 2 and arr.dtype == np.float32:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        real_save(f, arr)

    monkeypatch.setattr(acts.np, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        _build(profile, tiny_model)
    m = read_json(ref / "manifest.json")
    assert not m["complete"] and len(m["shards"]) == 2
    assert not list(ref.glob(".*tmp"))  # no half-written file left behind
    monkeypatch.setattr(acts.np, "save", real_save)
    folder = _build(profile, tiny_model)
    rows = [np.load(folder / s["file"]) for s in read_json(folder / "manifest.json")["shards"]]
    assert all(np.array_equal(a, b) for a, b in zip(rows, ref_rows))


def test_mismatching_cache_is_refused_not_reused(profile, tiny_model):
    folder = _build(profile, tiny_model)
    with pytest.raises(acts.CacheError, match="(?s)corpus_sha256.*rebuild=True"):
        acts.build_cache(profile, "train", tiny_model, lambda: _texts(), "sha-model", "other")
    # rebuild=True replaces it
    acts.build_cache(
        profile, "train", tiny_model, lambda: _texts(), "sha-model", "other", rebuild=True
    )
    assert read_json(folder / "manifest.json")["corpus_sha256"] == "other"


def test_truncated_shard_is_detected(profile, tiny_model):
    folder = _build(profile, tiny_model)
    shard = folder / "shard_00001.npy"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(acts.CacheError, match="truncated"):
        acts.ActivationStore(folder)
    with pytest.raises(acts.CacheError, match="truncated"):
        _build(profile, tiny_model)


def test_incomplete_cache_is_not_read_for_training(profile, tiny_model):
    folder = _build(profile, tiny_model)
    m = read_json(folder / "manifest.json")
    write_json_atomic(folder / "manifest.json", {**m, "complete": False})
    with pytest.raises(acts.CacheError, match="incomplete"):
        acts.ActivationStore(folder)


def test_batches_are_deterministic_and_resumable(profile, tiny_model):
    store = acts.ActivationStore(_build(profile, tiny_model), group_shards=2)
    it = store.iter_batches(32, seed=7)
    first = [next(it) for _ in range(12)]  # several epochs
    assert all(b.shape == (32, TINY_D) for b in first)
    again = store.iter_batches(32, seed=7, start_step=5)
    for b in first[5:]:
        torch.testing.assert_close(next(again), b, rtol=0, atol=0)
    other = next(store.iter_batches(32, seed=8))
    assert not torch.equal(other, first[0])


def test_normalizer_round_trip():
    x = torch.randn(500, 8) * 3 + 1
    for center in (False, True):
        n = acts.Normalizer.fit(x, center=center)
        y = n(x)
        assert abs(y.pow(2).sum(1).mean().item() - 8) < 1e-3
        torch.testing.assert_close(n.inverse(y), x, atol=1e-5, rtol=1e-5)
        assert acts.Normalizer.from_dict(n.to_dict()) == n


def test_bos_is_the_document_separator_when_the_vocab_has_one(tiny_model):
    # The tiny tokenizer, like SmolLM2's, has <|endoftext|> (id 0).
    assert bos_token_id(tiny_model.tokenizer) == 0


def test_keep_mask_drops_special_tokens_and_massive_activations():
    from hsae_utils.data.tokens import keep_mask

    tokens = torch.tensor([[0, 5, 6, 7, 0, 8]])
    resid = torch.ones(1, 6, 4)
    resid[0, 2] *= 50  # a massive activation
    keep = keep_mask(tokens, resid, [0], massive_factor=10.0)
    assert keep.tolist() == [[False, True, False, True, False, True]]
    assert keep_mask(tokens, resid, [0], massive_factor=None)[0, 2]


@pytest.mark.parametrize("cache_dtype", ["bfloat16", "float16"])
def test_half_cache_is_the_fp32_cache_rounded(
    profile, tiny_model, tmp_path, monkeypatch, cache_dtype
):
    ref = acts.ActivationStore(_build(profile, tiny_model))
    ref_all = ref.read_all()
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "half"))
    half = get_profile("smoke", **{**_fields(profile), "cache_dtype": cache_dtype})
    folder = _build(half, tiny_model)
    m = read_json(folder / "manifest.json")
    assert m["cache_dtype"] == cache_dtype
    shard = np.load(folder / m["shards"][0]["file"], mmap_mode="r")
    assert shard.dtype == (np.uint16 if cache_dtype == "bfloat16" else np.float16)
    store = acts.ActivationStore(folder, cache_dtype=cache_dtype)
    torch_dtype = getattr(torch, cache_dtype)
    # Stored values: the fp32 activations rounded to nearest (torch's conversion), read as fp32.
    torch.testing.assert_close(store.read_all(), ref_all.to(torch_dtype).float(), rtol=0, atol=0)
    # Same rows, same order of batches; fp32 batches, close to the fp32 cache's.
    for _, a, b in zip(range(6), store.iter_batches(32, seed=3), ref.iter_batches(32, seed=3)):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
    x = store.sample(50, seed=0)
    assert x.dtype == torch.float32 and x.shape == (50, TINY_D)
    assert store.group_bytes == sum(sorted(store.rows)[-8:]) * TINY_D * 2


def _fields(profile):
    keys = (
        "model_name",
        "n_layers",
        "d_model",
        "layer",
        "context_size",
        "n_train_tokens",
        "n_valid_tokens",
        "n_norm_tokens",
        "shard_tokens",
        "model_batch_size",
    )
    return {k: getattr(profile, k) for k in keys}


def test_cache_in_another_dtype_is_refused(profile, tiny_model):
    folder = _build(profile, tiny_model)
    bf16 = get_profile("smoke", **{**_fields(profile), "cache_dtype": "bfloat16"})
    with pytest.raises(
        acts.CacheError,
        match="(?s)cache_dtype: cache has 'float32', requested 'bfloat16'.*rebuild=True",
    ):
        _build(bf16, tiny_model)
    with pytest.raises(acts.CacheError, match="stored in float32, the profile asks for bfloat16"):
        acts.ActivationStore(folder, cache_dtype="bfloat16")
    # A cache written before the option existed has no cache_dtype: it is fp32, and reused.
    m = read_json(folder / "manifest.json")
    del m["cache_dtype"]
    write_json_atomic(folder / "manifest.json", m)
    assert _build(profile, tiny_model) == folder
    assert acts.ActivationStore(folder, cache_dtype="float32").cache_dtype == "float32"


def test_cache_of_another_model_dtype_is_refused(profile, tiny_model, tiny_model_dir):
    """The model forward's dtype is part of the cache's identity: an fp32 cache is not reused
    by a bf16 model (nor the reverse); rebuild=True replaces it. A cache built before the field
    was recorded ran the model in fp32: it is reused by an fp32 model and refused by a bf16 one."""
    folder = _build(profile, tiny_model)
    assert read_json(folder / "manifest.json")["model_dtype"] == "float32"
    bf16_profile = get_profile("smoke", **{**_fields(profile), "model_dtype": "bfloat16"})
    bf16_model = boot(tiny_model_dir, torch.bfloat16)
    refused = "(?s)model_dtype: cache has 'float32', requested 'bfloat16'.*rebuild=True"
    with pytest.raises(acts.CacheError, match=refused):
        _build(bf16_profile, bf16_model)
    # an old manifest (no model_dtype): read as fp32
    m = read_json(folder / "manifest.json")
    del m["model_dtype"]
    write_json_atomic(folder / "manifest.json", m)
    assert _build(profile, tiny_model) == folder
    assert "model_dtype" not in read_json(folder / "manifest.json")  # reused, not rewritten
    with pytest.raises(acts.CacheError, match=refused):
        _build(bf16_profile, bf16_model)
    _build(bf16_profile, bf16_model, rebuild=True)
    assert read_json(folder / "manifest.json")["model_dtype"] == "bfloat16"
    with pytest.raises(
        acts.CacheError, match="model_dtype: cache has 'bfloat16', requested 'float32'"
    ):
        _build(profile, tiny_model)


def test_fp16_overflow_is_refused(profile, tiny_model, monkeypatch):
    fp16 = get_profile("smoke", **{**_fields(profile), "cache_dtype": "float16"})
    real = acts.layer_resid
    monkeypatch.setattr(acts, "layer_resid", lambda *a: real(*a) * 1e6)
    with pytest.raises(acts.CacheError, match="overflow float16.*bfloat16"):
        _build(fp16, tiny_model)


def test_store_holds_one_group_at_a_time(profile, tiny_model):
    import gc
    import weakref

    store = acts.ActivationStore(_build(profile, tiny_model), group_shards=2)
    read, live_at_read = store._read_group, []
    groups: list = []

    def tracked(shards):
        gc.collect()
        live_at_read.append(sum(r() is not None for r in groups))
        out = read(shards)
        groups.append(weakref.ref(out))
        return out

    store._read_group = tracked
    it = store.iter_batches(16, seed=1)
    for _ in range(30):  # several groups and epochs
        next(it)
    assert len(live_at_read) > 3 and max(live_at_read) == 0


def test_profile_refuses_more_eval_contexts_than_the_validation_split():
    with pytest.raises(ValueError, match="validation split holds 8 contexts.*n_eval_contexts<=8"):
        get_profile("smoke", n_eval_contexts=9)
    with pytest.raises(ValueError, match="cache_dtype='int8'"):
        get_profile("smoke", cache_dtype="int8")
    paper = get_profile("paper")
    assert paper.n_eval_contexts * paper.context_size <= paper.n_valid_tokens
