"""Real faults (issue 17, cases 6 and 7): a disk that fills up during a write, a damaged SAELens
export, SIGINT / SIGTERM during training.

The disk is a real size-limited tmpfs mounted by the test (skipped where mounting is not allowed);
"another process" filling it is a ballast file written at a chosen moment, so the write that
fails is the real one, with the filesystem's own ENOSPC.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hsae_utils.config import REPO_ROOT
from hsae_utils.data import activations as acts
from hsae_utils.evals import cache as evaluate
from hsae_utils.io import DiskFullError, open_memmap_allocated, read_json
from hsae_utils.method import checkpoint
from hsae_utils.method.train import train
from hsae_utils.pipeline.outputs import output_problems as stage_problems
from hsae_utils.runs import run_dir

from .test_activations import _build
from .test_reliability import cache_dir, make_sae, tiny_profile, train_cfg  # noqa: F401
from .test_train import assert_same_state, state


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        pytest.skip("no mount command: the disk-full tests need Linux's tmpfs")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(folder: Path, leave: int = 0) -> Path:
    """Another process's file, filling `folder`'s disk up to `leave` free bytes."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while shutil.disk_usage(folder).free > leave:
            os.write(fd, bytes(min(4096, shutil.disk_usage(folder).free - leave) or 1))
    except OSError:
        pass
    finally:
        os.close(fd)
    return ballast


def test_disk_full_during_caching_keeps_the_complete_shards_and_resumes(
    cache_dir, small_disk, monkeypatch, tiny_model
):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(small_disk))
    P = tiny_profile()  # 5 contexts per shard, 3 per model call: shard 2 starts at call 5
    real, calls = acts.layer_resid, []

    def resid_then_fill(*args):
        calls.append(1)
        if len(calls) == 5:
            fill(small_disk)
        return real(*args)

    monkeypatch.setattr(acts, "layer_resid", resid_then_fill)
    with pytest.raises(
        DiskFullError,
        match=r"writing .*shard_00002\.npy: it needs [\d,]+ bytes.*"
        r"HSAE_OUTPUT_ROOT.*kept",
    ):
        _build(P, tiny_model)
    folder = P.cache_dir / "train"
    manifest = read_json(folder / "manifest.json")
    assert [s["file"] for s in manifest["shards"]] == ["shard_00000.npy", "shard_00001.npy"]
    assert not list(folder.glob(".*.tmp")) and not (folder / "shard_00002.npy").exists()

    monkeypatch.setattr(acts, "layer_resid", real)
    (small_disk / "ballast").unlink()  # space freed
    _build(P, tiny_model)
    ref, got = read_json(cache_dir / "train" / "manifest.json"), read_json(folder / "manifest.json")
    assert got["complete"] and got["shards"] == ref["shards"]  # same files, same checksums


def test_disk_full_during_a_checkpoint_keeps_the_last_one_and_resumes(
    cache_dir, small_disk, tmp_path, monkeypatch
):
    store = acts.ActivationStore(cache_dir / "train")
    straight = train(make_sae(), store, train_cfg(), tmp_path / "straight", progress=False)

    run = small_disk / "run"
    real, calls = checkpoint.torch.save, []

    def fill_then_save(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # the checkpoint of step 24
            fill(small_disk)
        return real(*args, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", fill_then_save)
    with pytest.raises(DiskFullError, match=r"writing .*run/checkpoint\.pt: it needs [\d,]+ bytes"):
        train(make_sae(), store, train_cfg(), run, progress=False)
    monkeypatch.setattr(checkpoint.torch, "save", real)
    assert checkpoint.load_training_checkpoint(run / "checkpoint.pt")["step"] == 16
    assert not list(run.glob(".*.tmp"))

    (small_disk / "ballast").unlink()
    resumed = train(
        make_sae(), acts.ActivationStore(cache_dir / "train"), train_cfg(), run, progress=False
    )
    assert resumed.resumed_from == 16
    assert_same_state(state(straight.sae), state(resumed.sae))


def test_disk_full_during_the_evaluation_cache_keeps_nothing_half_written(small_disk):
    """The probing and splice caches' writer (evaluate.save_cached): an entry is complete only
    with its manifest, so a failed write leaves no entry to be mistaken for a finished one."""
    root, identity = small_disk / "eval_cache", {"model": "tiny", "task": "probing"}
    arrays = {
        "offsets": np.arange(10_000, dtype=np.int64),
        "acts": np.random.default_rng(0).standard_normal((400, 256)).astype(np.float32),
    }
    fill(small_disk, leave=200_000)  # room for offsets (80 KB), not for acts (400 KB)
    with pytest.raises(DiskFullError, match=r"writing .*acts\.npy: it needs more than"):
        evaluate.save_cached(root, "probing", identity, arrays)
    folder = evaluate.cache_folder(root, "probing", identity)
    assert (folder / "offsets.npy").is_file() and not list(folder.glob(".*.tmp"))
    assert evaluate.load_cached(root, "probing", identity) is None

    (small_disk / "ballast").unlink()
    evaluate.save_cached(root, "probing", identity, arrays)
    hit = evaluate.load_cached(root, "probing", identity)
    assert all(np.array_equal(hit["arrays"][k], v) for k, v in arrays.items())


def test_a_memory_map_on_a_full_disk_fails_up_front_not_with_sigbus(small_disk):
    """The probing cache fills a memory-mapped file; on a sparse file a full disk kills the
    process with SIGBUS while it writes. Reserved first, it is a DiskFullError before any work."""
    fill(small_disk, leave=200_000)
    path = small_disk / ".acts.npy.partial"
    with pytest.raises(DiskFullError, match=r"acts\.npy\.partial: it needs 409,728 bytes"):
        open_memmap_allocated(path, np.float32, (400, 256))
    assert not path.exists()
    (small_disk / "ballast").unlink()
    out = open_memmap_allocated(path, np.float32, (400, 256))
    out[:] = 1.0
    out.flush()
    assert np.load(path).sum() == 400 * 256


# ----------------------------------------------------------------------------- the export


def test_a_damaged_saelens_export_is_rebuilt_from_our_weights(cache_dir, tmp_path, monkeypatch):
    from sae_lens import SAE

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "out"))
    P = tiny_profile(train_steps=8, seeds=(7,))
    folder = run_dir(P, "stage2_resampling", 7)  # what notebook 04 leaves
    train(
        make_sae(),
        acts.ActivationStore(cache_dir / "train"),
        train_cfg(steps=8, checkpoint_every=4),
        folder,
        progress=False,
    )
    weights = folder / checkpoint.SAE_LENS_WEIGHTS
    good = weights.read_bytes()
    info = checkpoint.read_export_info(folder)
    assert set(info["files"]) >= {
        checkpoint.SAE_LENS_WEIGHTS,
        checkpoint.SAE_LENS_CFG,
        checkpoint.HSAE_WEIGHTS,
    }

    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(Exception):  # noqa: B017 (whatever SAELens raises on a damaged file)
        SAE.load_from_disk(str(folder))  # what a user of the shared folder would hit
    assert checkpoint.verify_export(folder) == [
        f"{weights} fails its checksum (truncated or corrupted)"
    ]
    assert stage_problems(P, "04_stage2_resampling.ipynb") == []  # the skip-check rebuilt it
    assert weights.read_bytes() == good
    SAE.load_from_disk(str(folder))

    (folder / checkpoint.SAE_LENS_CFG).unlink()
    checkpoint.load_sae(folder)  # notebook 08's way in verifies and rebuilds too
    assert checkpoint.verify_export(folder) == []
    SAE.load_from_disk(str(folder))

    ours = folder / checkpoint.HSAE_WEIGHTS
    ours.write_bytes(ours.read_bytes()[:100])  # our own weights damaged: reported, not guessed
    assert stage_problems(P, "04_stage2_resampling.ipynb") == [
        f"{ours} fails its checksum (truncated or corrupted)"
    ]
    with pytest.raises(checkpoint.CheckpointError, match="hsae_weights.*truncated.*force_retrain"):
        checkpoint.load_sae(folder)


# ----------------------------------------------------------------------------- signals

_TRAIN = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from hsae_utils.data import activations as acts
from hsae_utils.method.train import train
from tests.test_reliability import make_sae, train_cfg
train(make_sae(), acts.ActivationStore(sys.argv[1]), train_cfg(steps=int(sys.argv[3])),
      Path(sys.argv[2]), progress=False)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_during_training_resumes_to_identical_weights(cache_dir, tmp_path, sig):
    steps = 160  # checkpoints every 8: the signal lands well before the end
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _TRAIN, str(cache_dir / "train"), str(run), str(steps)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (run / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode != 0, f"training finished before the signal: {err[-500:]}"
    stopped_at = checkpoint.load_training_checkpoint(run / "checkpoint.pt")["step"]
    assert 0 < stopped_at < steps

    store = acts.ActivationStore(cache_dir / "train")
    resumed = train(make_sae(), store, train_cfg(steps=steps), run, progress=False)
    assert resumed.resumed_from == stopped_at
    straight = train(
        make_sae(), store, train_cfg(steps=steps), tmp_path / "straight", progress=False
    )
    assert_same_state(state(straight.sae), state(resumed.sae))
    assert not list(run.glob(".*.tmp"))
