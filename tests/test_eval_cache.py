"""The model-side evaluation cache (hsae_utils.evals.cache) is checked on read: a truncated,
altered or missing file, or an entry of an older format, is reported and rebuilt, never read as
data; `rebuild=True` (run_all.sh --force) recomputes an intact entry."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch

from hsae_utils import evals as ev
from hsae_utils.evals import cache

from .test_evaluate import LAYER, SPECIAL, contexts


def _build(model, root, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = ev.build_splice_data(
            model,
            contexts(n=3, s=10, seed=1),
            LAYER,
            SPECIAL,
            cache_root=root,
            fingerprint="tiny",
            progress=False,
            **kw,
        )
    return data, [w for w in caught if issubclass(w.category, cache.DamagedCacheWarning)]


@pytest.fixture
def built(tiny_model, tmp_path):
    data, warned = _build(tiny_model, tmp_path)
    assert not data.reused and not warned
    return data


def _truncate(path, keep=0.5):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


@pytest.mark.parametrize(
    "damage", ["truncated", "header only", "bit flip", "missing", "old format", "manifest cut"]
)
def test_a_damaged_entry_is_reported_and_rebuilt(tiny_model, tmp_path, built, damage):
    resid = built.folder / "resid.npy"
    manifest = built.folder / "manifest.json"
    if damage == "truncated":
        _truncate(resid)
    elif damage == "header only":  # what np.load reports as "EOF: reading array header"
        _truncate(resid, keep=0.01)
    elif damage == "bit flip":  # same size: only the checksum can tell
        with open(resid, "r+b") as f:
            f.seek(-5, os.SEEK_END)
            b = f.read(1)
            f.seek(-5, os.SEEK_END)
            f.write(bytes([b[0] ^ 0x10]))
    elif damage == "missing":
        resid.unlink()
    elif damage == "old format":
        m = json.loads(manifest.read_text())
        m["format"] = 1
        manifest.write_text(json.dumps(m))
    elif damage == "manifest cut":
        _truncate(manifest)
    again, warned = _build(tiny_model, tmp_path)
    assert not again.reused and len(warned) == 1
    assert str(built.folder) in str(warned[0].message)
    torch.testing.assert_close(again.resid_NSD, built.resid_NSD)
    torch.testing.assert_close(again.kl_zero_NS, built.kl_zero_NS)
    # the rebuilt entry is whole again: read back, no warning
    third, warned = _build(tiny_model, tmp_path)
    assert third.reused and not warned
    torch.testing.assert_close(third.resid_NSD, built.resid_NSD)


def test_the_np_load_error_of_a_cut_header_is_what_we_guard_against(built):
    """Without the checks, the first reader fails with numpy's raw error (the issue's report)."""
    _truncate(built.folder / "ce_clean.npy", keep=0.05)
    with pytest.raises(ValueError, match="EOF"):
        np.load(built.folder / "ce_clean.npy", mmap_mode="r")


def test_rebuild_recomputes_an_intact_entry(tiny_model, tmp_path, built):
    before = (built.folder / "manifest.json").stat().st_mtime_ns
    again, warned = _build(tiny_model, tmp_path, rebuild=True)
    assert not again.reused and not warned
    assert (built.folder / "manifest.json").stat().st_mtime_ns != before
    assert _build(tiny_model, tmp_path)[0].reused


def test_an_interrupted_rebuild_leaves_no_stale_manifest(tmp_path, monkeypatch):
    """save_cached removes the manifest before it replaces files: an entry half rewritten reads
    as incomplete (None, no warning), not as the old entry over new files."""
    identity = {"model": "tiny"}
    cache.save_cached(tmp_path, "probing", identity, {"a": np.zeros(4), "b": np.ones(3)})
    real = np.save

    def fail_on_b(f, arr):
        if arr.shape == (5,):
            raise RuntimeError("interrupted")
        real(f, arr)

    monkeypatch.setattr(cache.np, "save", fail_on_b)
    with pytest.raises(RuntimeError):
        cache.save_cached(tmp_path, "probing", identity, {"a": np.ones(4), "b": np.ones(5)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.load_cached(tmp_path, "probing", identity) is None


def test_large_arrays_are_checked_by_size_and_sampled_blocks(tmp_path, monkeypatch):
    """Above FULL_HASH_BYTES the manifest keeps no whole-file sha256; a change inside a sampled
    block, or a cut, is still caught."""
    monkeypatch.setattr(cache, "FULL_HASH_BYTES", 1000)
    monkeypatch.setattr(cache, "SAMPLE_BLOCK_BYTES", 256)
    monkeypatch.setattr(cache, "SAMPLE_BLOCKS", 4)
    arr = np.arange(4096, dtype=np.float32)
    folder = cache.save_cached(tmp_path, "probing", {"m": 1}, {"acts": arr})
    spec = json.loads((folder / "manifest.json").read_text())["arrays"]["acts"]
    assert "sha256" not in spec and spec["bytes"] == (folder / "acts.npy").stat().st_size
    assert np.array_equal(cache.load_cached(tmp_path, "probing", {"m": 1})["arrays"]["acts"], arr)
    with open(folder / "acts.npy", "r+b") as f:  # the last block is always sampled
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x7f")
    with pytest.warns(cache.DamagedCacheWarning, match="sampled sha256"):
        assert cache.load_cached(tmp_path, "probing", {"m": 1}) is None


def test_force_rebuilds_the_evaluation_cache(tmp_path):
    """run_all.sh --force passes rebuild_cache=True to notebook 08, which hands it on."""
    import importlib.util
    import inspect

    from hsae_utils.pipeline.stages import papermill_parameters

    root = ev.__file__.rsplit("/hsae_utils/", 1)[0]
    spec = importlib.util.spec_from_file_location(
        "build_notebooks", f"{root}/scripts/build_notebooks.py"
    )
    build_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_notebooks)
    nb = tmp_path / "08_evaluation.ipynb"
    nb.write_text(json.dumps(build_notebooks.build("08_evaluation", None)))
    params = papermill_parameters(nb, "smoke", force=True)
    assert params[params.index("rebuild_cache") + 1] == "True"
    assert "rebuild_cache" not in papermill_parameters(nb, "smoke", force=False)
    assert "rebuild_cache" in inspect.signature(ev.evaluate_profile).parameters
