"""One pass over the cache for many SAEs: each ends bit-identical to training it alone."""
from __future__ import annotations

import pytest

from hsae_utils.train import TrainJob, read_log, train, train_many
from tests.test_train import InMemoryStore, assert_same_state, cfg, make, state, strip_time

pytestmark = pytest.mark.usefixtures("one_thread")

# Different architectures, step counts and checkpoint intervals (so they resume from different
# steps); the same seed and batch size, so the same batches.
JOBS = {"relu": dict(steps=16), "batchtopk": dict(checkpoint_every=6),
        "hierarchical": dict(checkpoint_every=8)}


def jobs(root):
    return [TrainJob(make(arch), cfg(**kw), root / arch, {"arch": arch})
            for arch, kw in JOBS.items()]


def test_shared_pass_equals_separate_runs_and_resumes(tmp_path):
    alone = {arch: train(make(arch), InMemoryStore(), cfg(**kw), tmp_path / "alone" / arch,
                         progress=False) for arch, kw in JOBS.items()}

    # interrupted at batch 19: relu finished at 16, batchtopk checkpointed at 18, hierarchical at 16
    with pytest.raises(KeyboardInterrupt):
        train_many(jobs(tmp_path / "shared"), InMemoryStore(crash_at=19), progress=False)
    results = train_many(jobs(tmp_path / "shared"), InMemoryStore(), progress=False)

    assert [r.resumed_from for r in results] == [16, 18, 16]
    for arch, res in zip(JOBS, results):
        ref = alone[arch]
        assert res.steps == ref.steps
        assert_same_state(state(res.sae), state(ref.sae))
        assert strip_time(res.log) == strip_time(ref.log), arch
        assert res.events == ref.events
        assert strip_time(read_log(res.out_dir / "train_log.jsonl")) == strip_time(
            read_log(ref.out_dir / "train_log.jsonl"))
    assert {e["event"] for e in results[2].events} == {"resample", "merge"}


def test_shared_pass_refuses_jobs_with_different_batches(tmp_path):
    bad = [TrainJob(make("relu"), cfg(), tmp_path / "a"),
           TrainJob(make("topk"), cfg(seed=8), tmp_path / "b")]
    with pytest.raises(ValueError, match="seed"):
        train_many(bad, InMemoryStore(), progress=False)
    same_dir = [TrainJob(make("relu"), cfg(), tmp_path / "a"),
                TrainJob(make("topk"), cfg(), tmp_path / "a")]
    with pytest.raises(ValueError, match="out_dir"):
        train_many(same_dir, InMemoryStore(), progress=False)


def test_train_runs_shares_the_pass_and_matches_train_run(tmp_path, monkeypatch):
    from hsae_utils.config import get_profile
    from hsae_utils.experiments import train_run, train_runs

    profile = get_profile("smoke", d_model=16, d_sae=48, train_steps=12, train_batch_size=64,
                          seeds=(0,), log_every=2, checkpoint_every=4, window_size=4,
                          merge_every=6, resample_every=4)
    names = ["topk", "relu_l1", "stage5_clustering"]
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "alone"))
    alone = {name: train_run(profile, name, store=InMemoryStore(), progress=False)[0]
             for name in names}
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "shared"))
    shared = train_runs(profile, names, store=InMemoryStore(), progress=False)
    again = train_runs(profile, names, store=InMemoryStore(crash_at=0), progress=False)
    for name in names:
        (res,), ref = shared[name], alone[name]
        assert res.seconds is not None and again[name][0].seconds is None  # reused, no batch read
        assert strip_time(res.log) == strip_time(ref.log) and res.events == ref.events
        a, b = [(r.folder / "sae_weights.safetensors").read_bytes() for r in (res, ref)]
        assert a == b, name
