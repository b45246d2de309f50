"""Reliability (issue 7): pre-empted jobs resume to the same result, files are written atomically,
run_all.sh re-runs only what is missing, and bad inputs fail early with a message naming the fix.

Kills are real: a forked child runs the real code and is SIGKILLed in the middle of writing a
file (no `finally`, no atexit), as a pre-empted job would be. The tiny random Llama of conftest.py
stands in for the language model.
"""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.data import activations as acts
from hsae_utils.io import read_json
from hsae_utils.method import checkpoint
from hsae_utils.method.saes import HierarchicalSAE, config_from_profile
from hsae_utils.method.train import NonFiniteLossError, TrainConfig, read_log, train
from hsae_utils.pipeline.outputs import output_problems as stage_problems

from .conftest import TINY_D, TINY_LAYERS
from .test_activations import _build, _texts
from .test_train import assert_same_state, state, strip_time

pytestmark = pytest.mark.usefixtures("one_thread")

# A smoke profile sized for the tiny model: 24 train contexts of 16 tokens, 5 per shard.
TINY = dict(
    model_name="tiny",
    n_layers=TINY_LAYERS,
    d_model=TINY_D,
    layer=2,
    context_size=16,
    n_train_tokens=16 * 24,
    n_valid_tokens=16 * 6,
    n_norm_tokens=100,
    shard_tokens=16 * 5,
    model_batch_size=3,
)


def tiny_profile(**overrides):
    return get_profile("smoke", **{**TINY, **overrides})


@pytest.fixture
def root(tmp_path, monkeypatch):
    """An empty HSAE_OUTPUT_ROOT: nothing here touches outputs/."""
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "out"))
    return tmp_path / "out"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, tiny_model):
    """A complete tiny cache (train + validation), built once; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("shared")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HSAE_OUTPUT_ROOT", str(out))
        P = tiny_profile()
        train_dir = _build(P, tiny_model)
        _build(P, tiny_model, "validation", normalizer=acts.ActivationStore(train_dir).normalizer)
        return P.cache_dir  # the path depends on HSAE_OUTPUT_ROOT: read it inside the context


def copy_cache(cache_dir, root) -> Path:
    """The shared cache copied under `root`, where tiny_profile() looks for it."""
    dest = root / "smoke" / "activations"
    shutil.copytree(cache_dir, dest)
    return dest


def make_sae(**overrides) -> HierarchicalSAE:
    """The full HierarchicalSAE (most state to restore: windows, counters, RNG), built from the
    profile like the notebooks do, with intervals short enough that its mechanisms fire."""
    cfg = config_from_profile(
        "hierarchical",
        tiny_profile(),
        **{
            "d_sae": 64,
            "dead_after_tokens": 128,
            "window_size": 4,
            "resample_every": 4,
            "merge_every": 6,
            "dead_rate": 0.3,
            "merge_threshold": 0.5,
            **overrides,
        },
    )
    return HierarchicalSAE(cfg)


def train_cfg(**kw) -> TrainConfig:
    return TrainConfig(
        **{"steps": 32, "batch_size": 32, "log_every": 2, "checkpoint_every": 8, "seed": 7, **kw}
    )


def run_killed_mid_write(fn, module, attr: str, nth: int, file_arg: int) -> None:
    """Run fn() in a forked child whose nth call of `module.attr` (a save function taking its
    file as argument `file_arg`) writes half of its bytes, then SIGKILLs the child."""

    def child():
        real, calls = getattr(module, attr), itertools.count(1)

        def dying_save(*args):
            if next(calls) < nth:
                return real(*args)
            buf = io.BytesIO()
            real(*[buf if i == file_arg else a for i, a in enumerate(args)])
            half, target = buf.getvalue()[: len(buf.getvalue()) // 2], args[file_arg]
            if hasattr(target, "write"):
                target.write(half)
                target.flush()
            else:
                Path(target).write_bytes(half)
            os.kill(os.getpid(), signal.SIGKILL)

        setattr(module, attr, dying_save)  # in the child only
        fn()

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == -signal.SIGKILL, f"the child was not killed (exit {proc.exitcode})"


# ----------------------------------------------------------------------------- resume


def test_killed_training_resumes_to_the_weights_of_an_uninterrupted_run(cache_dir, tmp_path):
    store = acts.ActivationStore(cache_dir / "train")
    straight = train(make_sae(), store, train_cfg(), tmp_path / "straight", progress=False)

    run = tmp_path / "killed"
    # killed while writing the third checkpoint (step 24): the one on disk is step 16's
    run_killed_mid_write(
        lambda: train(make_sae(), store, train_cfg(), run, progress=False),
        checkpoint.torch,
        "save",
        nth=3,
        file_arg=1,
    )
    assert checkpoint.load_training_checkpoint(run / "checkpoint.pt")["step"] == 16
    assert list(run.glob(".checkpoint.pt.*.tmp")), "the half-written checkpoint stays a temporary"
    with open(run / "train_log.jsonl", "a") as log:  # as if also cut during a log append
        log.write('{"kind": "metrics", "st')

    resumed = train(
        make_sae(), acts.ActivationStore(cache_dir / "train"), train_cfg(), run, progress=False
    )
    assert resumed.resumed_from == 16
    assert_same_state(state(straight.sae), state(resumed.sae))
    assert strip_time(resumed.log) == strip_time(straight.log)
    assert resumed.events == straight.events and straight.events, "mechanisms should fire"
    assert not list(run.glob(".*.tmp"))


def test_killed_caching_resumes_from_the_last_complete_shard(cache_dir, root, tiny_model):
    P = tiny_profile()
    # np.save writes tokens.npy, then one shard per call: the 4th call is shard_00002
    run_killed_mid_write(lambda: _build(P, tiny_model), acts.np, "save", nth=4, file_arg=0)
    folder = P.cache_dir / "train"
    manifest = read_json(folder / "manifest.json")
    assert not manifest["complete"] and [s["file"] for s in manifest["shards"]] == [
        "shard_00000.npy",
        "shard_00001.npy",
    ]
    assert not (folder / "shard_00002.npy").exists() and list(folder.glob(".shard_00002*.tmp"))

    _build(P, tiny_model)
    ref = read_json(cache_dir / "train" / "manifest.json")
    got = read_json(folder / "manifest.json")
    assert got["complete"] and got["shards"] == ref["shards"]  # same files, same checksums
    assert got["normalization"] == ref["normalization"]
    for shard in ref["shards"]:
        assert np.array_equal(
            np.load(folder / shard["file"]), np.load(cache_dir / "train" / shard["file"])
        )
    assert not list(folder.glob(".*.tmp"))


# ----------------------------------------------------------------------------- atomic writes


def test_every_output_file_arrives_by_rename(cache_dir, tmp_path, tiny_model):
    """Run each writer (cache, training checkpoints, SAE export, evaluation cache and results)
    with an audit hook recording os.replace; every file left behind must have been renamed into
    place. The training log is the exception: append-only, its reader drops a cut last line."""
    out = tmp_path / "out"
    record = tmp_path / "renamed.json"

    def child():
        import pandas as pd

        from hsae_utils import evals
        from hsae_utils.evals.cache import save_cached
        from hsae_utils.timing import Timer

        renamed = []
        sys.addaudithook(
            lambda event, args: (
                renamed.append(str(args[1]))
                if event == "os.rename" and str(args[1]).startswith(str(out))
                else None
            )
        )
        os.environ["HSAE_OUTPUT_ROOT"] = str(out)
        P = tiny_profile()
        _build(P, tiny_model)
        train(
            make_sae(),
            acts.ActivationStore(cache_dir / "train"),
            train_cfg(steps=16),
            P.sae_dir / "run" / "seed7",
            progress=False,
        )
        save_cached(
            P.output_dir / "eval_cache",
            "splice",
            {"model": "tiny"},
            {"x": np.zeros((3, 4), np.float32)},
        )
        result = evals.EvaluationResult(
            results=pd.DataFrame(
                [{"run": "run", "config": "c", "seed": 7, "metric": "mse", "value": 1.0}]
            ),
            runs=[],
            absorption_letters=pd.DataFrame(),
            probing_tasks=pd.DataFrame(),
            notes=[],
            timer=Timer(),
        )
        evals.save_results(result, P.results_dir, P)
        record.write_text(json.dumps(renamed))

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == 0
    renamed = set(json.loads(record.read_text()))
    files = {str(p) for p in out.rglob("*") if p.is_file() and p.name != "train_log.jsonl"}
    kinds = {Path(f).suffix for f in files}
    assert {".npy", ".json", ".pt", ".safetensors", ".csv"} <= kinds, kinds
    assert files - renamed == set(), "written in place, not through atomic_path"


def test_log_reader_drops_only_a_cut_last_line(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert read_log(log) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(json.JSONDecodeError):  # damage inside the log is not silently skipped
        read_log(log)


# ----------------------------------------------------------------------------- run_all.sh


def _notebook(path: Path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    # each run appends the notebook's name to ran.txt, so the test sees what was executed
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os, pathlib\n"
            "with open(pathlib.Path(os.environ['HSAE_OUTPUT_ROOT']) / 'ran.txt', 'a') as f:\n"
            f"    f.write({path.stem!r} + '\\n')\n" + code
        )
    ]
    nbformat.write(nb, path)


def _run_all(nb_dir: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HSAE_NOTEBOOK_DIR": str(nb_dir), "HSAE_OUTPUT_ROOT": str(out)}
    return subprocess.run(
        [str(REPO_ROOT / "run_all.sh"), "--no-setup", "--profile", "smoke", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_all_stops_on_a_failing_notebook_and_reruns_only_what_is_missing(cache_dir, tmp_path):
    nbs, out = tmp_path / "nbs", tmp_path / "out"
    nbs.mkdir()
    _notebook(nbs / "01_activation_caching.ipynb", "")  # its outputs: the activation cache
    _notebook(nbs / "02_flaky.ipynb", "raise RuntimeError('boom')")

    def ran() -> list[str]:
        return (out / "ran.txt").read_text().split()

    first = _run_all(nbs, out)
    executed = out / "smoke" / "notebooks" / "02_flaky.ipynb"
    assert first.returncode != 0
    assert "02_flaky.ipynb failed" in first.stderr and str(executed) in first.stderr
    assert "boom" in executed.read_text()  # the executed copy holds the error
    assert ran() == ["01_activation_caching", "02_flaky"]

    copy_cache(cache_dir, out)  # notebook 01's outputs, complete and valid
    _notebook(nbs / "02_flaky.ipynb", "")
    assert _run_all(nbs, out).returncode == 0
    assert ran()[2:] == ["02_flaky"]  # 01 skipped: finished, and its cache is valid

    (out / "smoke" / "activations" / "validation" / "shard_00000.npy").unlink()
    third = _run_all(nbs, out)
    assert third.returncode == 0
    assert "outputs of 01_activation_caching.ipynb incomplete" in third.stdout
    assert ran()[3:] == ["01_activation_caching"]  # its output went missing: redone; 02 skipped

    (nbs / "01_activation_caching.ipynb").unlink()  # one notebook is enough to see --force
    assert _run_all(nbs, out, "--force").returncode == 0
    assert ran()[4:] == ["02_flaky"]  # finished and valid, re-run anyway


def test_stage_outputs_are_checked(cache_dir, root):
    P = tiny_profile()
    assert stage_problems(P, "01_activation_caching.ipynb")  # no cache yet
    folder = copy_cache(cache_dir, root)
    assert stage_problems(P, "01_activation_caching.ipynb") == []
    shard = folder / "train" / "shard_00001.npy"
    shard.write_bytes(shard.read_bytes()[:100])
    assert any("truncated" in p for p in stage_problems(P, "01_activation_caching.ipynb"))
    assert any(
        "stage2_resampling/seed42 is not a finished run" in p
        for p in stage_problems(P, "04_stage2_resampling.ipynb")
    )
    assert stage_problems(P, "09_something_new.ipynb") == []


# ----------------------------------------------------------------------------- bad inputs


def test_unknown_profile_or_parameter():
    with pytest.raises(ValueError, match="Valid profiles: .*local.*--profile"):
        get_profile("locl")
    with pytest.raises(ValueError, match="Unknown profile field.*Valid fields: .*train_steps"):
        get_profile("smoke", train_step=10)
    with pytest.raises(ValueError, match="Unknown TopKSAEConfig field.*Valid fields: .* k,"):
        config_from_profile("topk", tiny_profile(), kk=3)
    with pytest.raises(ValueError, match="train_steps=0.*positive"):
        get_profile("smoke", train_steps=0)


def test_layer_out_of_range(tiny_model_dir):
    with pytest.raises(ValueError, match=r"layer 30 is out of range .*pass layer=0\.\.29"):
        get_profile("local", layer=30)
    from hsae_utils.data.model import load_model

    # a profile that believes the model is deeper than it is
    P = get_profile("smoke", model_name=str(tiny_model_dir), n_layers=30, layer=22, d_model=TINY_D)
    with pytest.raises(ValueError, match="expects 30 layers .* has 4"):
        load_model(P, device="cpu")


@pytest.mark.parametrize(
    "arch, overrides, message",
    [
        ("relu", {"d_sae": 0}, "d_sae must be a positive integer"),
        ("topk", {"k": 0}, r"k must be an integer in 1\.\.d_sae .*pass k=1\.\.32"),
        ("topk", {"k": 33}, r"got 33; pass k=1\.\.32 or a larger d_sae"),
        ("batchtopk", {"d_sae": 16, "k": 20}, r"got 20; pass k=1\.\.16"),
    ],
)
def test_bad_dictionary_size_or_k(arch, overrides, message):
    with pytest.raises(ValueError, match=message):
        config_from_profile(arch, tiny_profile(), **overrides)


@pytest.mark.parametrize(
    "overrides, model_sha, corpus_sha, key",
    [
        ({"model_name": "other"}, "sha-model", "sha-corpus", "model"),
        ({}, "other-weights", "sha-corpus", "model_sha256"),
        ({"layer": 1}, "sha-model", "sha-corpus", "hook"),
        ({"d_model": 64}, "sha-model", "sha-corpus", "d_model"),
        ({}, "sha-model", "other-corpus", "corpus_sha256"),
    ],
)
def test_cache_for_another_model_hook_width_or_corpus_is_refused(
    cache_dir, root, tiny_model, overrides, model_sha, corpus_sha, key
):
    folder = copy_cache(cache_dir, root) / "train"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(acts.CacheError, match=f"(?s){key}: cache has .*rebuild=True"):
        acts.build_cache(
            tiny_profile(**overrides), "train", tiny_model, lambda: _texts(), model_sha, corpus_sha
        )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing overwritten


def test_training_refuses_a_cache_of_another_hook(cache_dir, tmp_path):
    store = acts.ActivationStore(cache_dir / "train")
    sae = make_sae(hook_name="blocks.3.hook_resid_post")
    with pytest.raises(ValueError, match="hook 'blocks.2.hook_resid_post'.*re-run notebook 01"):
        train(sae, store, train_cfg(), tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_corrupted_shard_is_refused(cache_dir, root, tiny_model):
    folder = copy_cache(cache_dir, root) / "train"
    shard = folder / "shard_00002.npy"
    data = bytearray(shard.read_bytes())
    data[-40:] = bytes(40)  # same size, damaged content: only the checksum can tell
    shard.write_bytes(bytes(data))
    store = acts.ActivationStore(folder)  # opening checks sizes only
    with pytest.raises(acts.CacheError, match="shard_00002.npy fails its checksum.*rebuild"):
        for _ in store.iter_batches(32, seed=0):  # every shard is read in the first epoch
            pass
    with pytest.raises(acts.CacheError, match="checksum"):
        _build(tiny_profile(), tiny_model)
    shard.write_bytes(b"\x93NUMPY garbage" + bytes(len(data)))  # a damaged header
    with pytest.raises(acts.CacheError, match="truncated or has the wrong shape"):
        acts.ActivationStore(folder)


def test_corrupted_checkpoint_or_export_is_refused(cache_dir, tmp_path):
    store = acts.ActivationStore(cache_dir / "train")
    train(make_sae(), store, train_cfg(steps=8, checkpoint_every=4), tmp_path, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:3000])
    damaged = ckpt.read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted.*Delete it"):
        train(make_sae(), store, train_cfg(steps=16, checkpoint_every=4), tmp_path, progress=False)
    assert ckpt.read_bytes() == damaged  # left for the user to inspect
    weights = tmp_path / checkpoint.HSAE_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted.*force_retrain"):
        checkpoint.load_sae(tmp_path)


def test_missing_or_damaged_model_files(tiny_model_dir, tmp_path):
    from hsae_utils.data.model import GGUF_PACKAGE, load_model, verified_sha256

    missing = get_profile(
        "smoke", model_name=str(tmp_path / "nowhere"), n_layers=TINY_LAYERS, layer=2, d_model=TINY_D
    )
    with pytest.raises(RuntimeError, match="local folder .*nowhere.*config.json"):
        load_model(missing, device="cpu")
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, damaged)
    (damaged / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(RuntimeError, match="missing, unreadable or damaged"):
        load_model(
            get_profile(
                "smoke", model_name=str(damaged), n_layers=TINY_LAYERS, layer=2, d_model=TINY_D
            ),
            device="cpu",
        )
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF truncated")
    with pytest.raises(ValueError, match=f"damaged .*--force-reinstall.*{GGUF_PACKAGE}"):
        verified_sha256(gguf)


def test_no_disk_space_is_found_before_any_work(root, tiny_model):
    P = tiny_profile(n_train_tokens=10**14)  # ~13 PB of activations

    def texts():
        raise AssertionError("no text may be read before the space check")

    with pytest.raises(acts.CacheError, match="needs about .* GiB .*HSAE_OUTPUT_ROOT"):
        acts.build_cache(P, "train", tiny_model, texts, "sha-model", "sha-corpus")
    with pytest.raises(acts.CacheError, match="needs about"):
        acts.cache_activations(P, model=tiny_model)  # both splits, before loading anything
    assert not root.exists()


def test_nonfinite_activations_stop_caching(root, tiny_model):
    embed = next(p for n, p in tiny_model.named_parameters() if "embed" in n)
    saved = embed.data.clone()
    try:
        embed.data[:] = float("nan")
        with pytest.raises(acts.CacheError, match=r"NaN/Inf activations at blocks\.2\..*float32"):
            _build(tiny_profile(), tiny_model)
    finally:
        embed.data.copy_(saved)
    manifest = read_json(tiny_profile().cache_dir / "train" / "manifest.json")
    assert not manifest["complete"] and manifest["shards"] == []


def test_diverging_training_stops_and_keeps_the_last_good_checkpoint(cache_dir, tmp_path):
    store = acts.ActivationStore(cache_dir / "train")
    with pytest.raises(NonFiniteLossError) as err:
        train(
            make_sae(),
            store,
            train_cfg(lr=1e30, steps=8, checkpoint_every=1),
            tmp_path,
            progress=False,
        )
    bad_step = int(re.search(r"Non-finite \w+ at step (\d+)", str(err.value)).group(1))
    assert "last good checkpoint" in str(err.value) and "lower `lr`" in str(err.value)
    state_ = checkpoint.load_training_checkpoint(tmp_path / "checkpoint.pt")
    assert state_["step"] < bad_step
    assert all(torch.isfinite(v).all() for v in state_["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------- determinism


def test_same_profile_and_seed_give_identical_cache_and_metrics(
    cache_dir, root, tiny_model, tmp_path
):
    again = _build(tiny_profile(), tiny_model)
    for path in (cache_dir / "train").glob("*.npy"):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name

    runs = [
        train(
            make_sae(), acts.ActivationStore(folder), train_cfg(), tmp_path / name, progress=False
        )
        for name, folder in (("a", cache_dir / "train"), ("b", again))
    ]
    assert strip_time(runs[0].log) == strip_time(runs[1].log)
    assert_same_state(state(runs[0].sae), state(runs[1].sae))
