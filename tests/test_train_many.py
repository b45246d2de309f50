"""One pass over the cache for many SAEs: each ends bit-identical to training it alone."""

from __future__ import annotations

import pytest

from hsae_utils.method.checkpoint import EXPORT_FILES
from hsae_utils.method.saes import ARCHITECTURES
from hsae_utils.method.train import read_log, train
from hsae_utils.method.train_many import TrainJob, train_many
from tests.test_train import InMemoryStore, assert_same_state, cfg, make, state, strip_time

pytestmark = pytest.mark.usefixtures("one_thread")

# Different architectures, step counts and checkpoint intervals (so they resume from different
# steps); the same seed and batch size, so the same batches.
JOBS = {
    "relu": dict(steps=16),
    "batchtopk": dict(checkpoint_every=6),
    "hierarchical": dict(checkpoint_every=8),
}


def jobs(root):
    return [
        TrainJob(make(arch), cfg(**kw), root / arch, {"arch": arch}) for arch, kw in JOBS.items()
    ]


def test_shared_pass_equals_separate_runs_and_resumes(tmp_path):
    alone = {
        arch: train(
            make(arch), InMemoryStore(), cfg(**kw), tmp_path / "alone" / arch, progress=False
        )
        for arch, kw in JOBS.items()
    }

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
        assert strip_time(read_log(res.folder / "train_log.jsonl")) == strip_time(
            read_log(ref.folder / "train_log.jsonl")
        )
    assert {e["event"] for e in results[2].events} == {"resample", "merge"}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_train_many_of_one_job_is_train(arch, tmp_path):
    """`train` (the plain loop) and `train_many([job])` (the shared pass) are the same trainer:
    the same weights, logs, events and exported files, bit for bit; and a pass interrupted at
    batch 19 resumes under `train` to the same end."""

    def check(res, ref):
        assert_same_state(state(res.sae), state(ref.sae))
        assert strip_time(res.log) == strip_time(ref.log) and res.events == ref.events
        for name in EXPORT_FILES:
            assert (res.folder / name).read_bytes() == (ref.folder / name).read_bytes(), name

    meta = {"arch": arch}
    alone = train(
        make(arch), InMemoryStore(), cfg(), tmp_path / "alone", progress=False, metadata=meta
    )
    (many,) = train_many(
        [TrainJob(make(arch), cfg(), tmp_path / "many", meta)], InMemoryStore(), progress=False
    )
    check(many, alone)
    with pytest.raises(KeyboardInterrupt):
        train_many(
            [TrainJob(make(arch), cfg(), tmp_path / "mixed", meta)],
            InMemoryStore(crash_at=19),
            progress=False,
        )
    mixed = train(
        make(arch), InMemoryStore(), cfg(), tmp_path / "mixed", progress=False, metadata=meta
    )
    assert mixed.resumed_from == 16
    check(mixed, alone)


def test_shared_pass_refuses_jobs_with_different_batches(tmp_path):
    bad = [
        TrainJob(make("relu"), cfg(), tmp_path / "a"),
        TrainJob(make("topk"), cfg(seed=8), tmp_path / "b"),
    ]
    with pytest.raises(ValueError, match="seed"):
        train_many(bad, InMemoryStore(), progress=False)
    same_dir = [
        TrainJob(make("relu"), cfg(), tmp_path / "a"),
        TrainJob(make("topk"), cfg(), tmp_path / "a"),
    ]
    with pytest.raises(ValueError, match="out_dir"):
        train_many(same_dir, InMemoryStore(), progress=False)


def test_train_runs_shares_the_pass_and_matches_train_run(tmp_path, monkeypatch):
    from hsae_utils.config import get_profile
    from hsae_utils.experiment.paper_runs import train_run, train_runs

    profile = get_profile(
        "smoke",
        d_model=16,
        d_sae=48,
        train_steps=12,
        train_batch_size=64,
        seeds=(0,),
        log_every=2,
        checkpoint_every=4,
        window_size=4,
        merge_every=6,
        resample_every=4,
    )
    names = ["topk", "relu_l1", "stage5_clustering"]
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "alone"))
    alone = {
        name: train_run(profile, name, store=InMemoryStore(), progress=False)[0] for name in names
    }
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "shared"))
    shared = train_runs(profile, names, store=InMemoryStore(), progress=False)
    again = train_runs(profile, names, store=InMemoryStore(crash_at=0), progress=False)
    for name in names:
        (res,), ref = shared[name], alone[name]
        assert res.seconds is not None and again[name][0].seconds is None  # reused, no batch read
        assert strip_time(res.log) == strip_time(ref.log) and res.events == ref.events
        a, b = [(r.folder / "sae_weights.safetensors").read_bytes() for r in (res, ref)]
        assert a == b, name


def stage(n: int, **kw):
    """The HierarchicalSAE of ablation stage n (test-sized, mechanisms that do fire)."""
    from hsae_utils.runs import stage_switches

    sae = make("hierarchical")
    cls = type(sae)
    return cls(cls.config_class(**{**sae.cfg.to_dict(), **stage_switches(n), **kw}), seed=123)


def test_twins_share_gradient_steps_until_one_acts_and_end_as_if_alone(tmp_path):
    """Stages that differ only in event-driven mechanisms (resampling, window tracking, merging)
    share one gradient step until one of them acts: a leader's event hands its followers on to
    the next of them, a follower's event detaches it. Each ends bit-identical to training alone,
    also across an interruption (resumed twins pair again when their checkpoints are equal)."""
    saes = {
        "s3": lambda: stage(3),
        "s1": lambda: stage(1),
        "s2": lambda: stage(2),
        "s5": lambda: stage(5),
        "s4": lambda: stage(4),
        "s5_never_merges": lambda: stage(5, merge_every=10**6, resampling=False),
    }
    alone = {
        k: train(f(), InMemoryStore(), cfg(), tmp_path / "alone" / k, progress=False)
        for k, f in saes.items()
    }
    assert {e["event"] for e in alone["s3"].events} == {"resample"}
    assert {e["event"] for e in alone["s5"].events} == {"resample", "merge"}
    assert not alone["s1"].events and not alone["s5_never_merges"].events

    def jobs(folder):
        return [TrainJob(f(), cfg(), tmp_path / folder / k) for k, f in saes.items()]

    def check(results):
        for k, res in results.items():
            ref = alone[k]
            assert_same_state(state(res.sae), state(ref.sae))
            assert strip_time(res.log) == strip_time(ref.log), k
            assert res.events == ref.events, k
        return {k: r.shared_steps for k, r in results.items()}

    # One pass: s3 leads s1, s2 and acts at step 4, handing s2 on to s1; s5 leads s4 and
    # s5_never_merges; at step 4 s4 acts (detached) and so does s5 (s5_never_merges goes alone);
    # s4 and s5 resampled alike, so s4 follows s5 again until s5 merges at step 6.
    shared = check(dict(zip(saes, train_many(jobs("one"), InMemoryStore(), progress=False))))
    assert shared == {"s3": 0, "s1": 4, "s2": 24, "s5": 0, "s4": 6, "s5_never_merges": 4}
    # Interrupted at batch 19 and resumed from the checkpoints at 16: only s1 and s2 are still
    # equal there, so s2 follows s1 again for the last 8 steps.
    with pytest.raises(KeyboardInterrupt):
        train_many(jobs("resumed"), InMemoryStore(crash_at=19), progress=False)
    resumed = check(dict(zip(saes, train_many(jobs("resumed"), InMemoryStore(), progress=False))))
    assert resumed == {"s3": 0, "s1": 0, "s2": 8, "s5": 0, "s4": 0, "s5_never_merges": 0}
    # Without sharing: the same results, no shared steps.
    plain = train_many(jobs("plain"), InMemoryStore(), progress=False, share_trajectories=False)
    assert set(check(dict(zip(saes, plain))).values()) == {0}
