"""Runs trained by another trainer revision (`checkpoint.TRAINER_REVISION`) are retrained, never
reused, resumed or deleted: their folders are set aside with a printed reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hsae_utils.config import get_profile
from hsae_utils.evals.loading import find_saes
from hsae_utils.experiment.paper_runs import is_finished, train_run
from hsae_utils.io import read_json, write_json_atomic
from hsae_utils.method import checkpoint
from hsae_utils.method.checkpoint import (
    HSAE_CONFIG,
    TRAINER_REVISION,
    load_sae,
    read_export_info,
    save_sae,
    set_aside_stale,
    stale_revision,
)
from hsae_utils.method.train import CHECKPOINT_NAME, train
from tests.test_train import InMemoryStore, cfg, make

pytestmark = pytest.mark.usefixtures("one_thread")


def _profile():
    return get_profile(
        "smoke",
        d_model=16,
        d_sae=48,
        train_steps=12,
        train_batch_size=64,
        seeds=(0,),
        log_every=2,
        checkpoint_every=4,
    )


def _as_revision_1(folder: Path) -> None:
    """Make the run in `folder` look as written before revisions were recorded (no field)."""
    if (folder / HSAE_CONFIG).is_file():
        info = read_json(folder / HSAE_CONFIG)
        del info["trainer_revision"]
        write_json_atomic(folder / HSAE_CONFIG, info)
    if (folder / CHECKPOINT_NAME).is_file():
        state = torch.load(folder / CHECKPOINT_NAME, weights_only=True)
        del state["trainer_revision"]
        torch.save(state, folder / CHECKPOINT_NAME)


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def test_checkpoint_name_is_the_trainers():
    assert checkpoint._CHECKPOINT == CHECKPOINT_NAME


def test_paper_run_of_another_revision_is_set_aside_and_retrained(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    P = _profile()
    (first,) = train_run(P, "topk", store=InMemoryStore(), progress=False)
    folder = first.folder
    assert read_export_info(folder)["trainer_revision"] == TRAINER_REVISION
    assert is_finished(folder, P.train_steps) and stale_revision(folder) is None
    # the current revision: reused (a store that fails on its first batch is never read)
    (again,) = train_run(P, "topk", store=InMemoryStore(crash_at=0), progress=False)
    assert again.seconds is None and folder.is_dir()

    _as_revision_1(folder)
    old = _files(folder)
    assert not is_finished(folder, P.train_steps) and stale_revision(folder) == 1
    capsys.readouterr()
    (redo,) = train_run(P, "topk", store=InMemoryStore(), progress=False)
    aside = P.sae_dir.with_name("saes.rev1") / "topk" / "seed0"
    out = capsys.readouterr().out
    assert f"{folder}: trained by trainer revision 1" in out and f"moved to {aside}" in out
    assert _files(aside) == old  # kept byte for byte, checkpoint and log included
    # retrained from step 0 (not resumed from the old final checkpoint), under this revision
    assert redo.seconds is not None and redo.resumed_from is None
    assert read_export_info(folder)["trainer_revision"] == TRAINER_REVISION
    # the same trainer and seed here, so the same weights: a full run, not a re-stamped export
    weights = "sae_weights.safetensors"
    assert (folder / weights).read_bytes() == old[weights]
    # notebook 08's walk over saes/ sees only the retrained run
    assert [r.folder for r in find_saes(P.sae_dir)] == [folder]


def test_interrupted_run_of_another_revision_is_set_aside_not_resumed(tmp_path, capsys):
    folder = tmp_path / "run" / "seed0"
    with pytest.raises(KeyboardInterrupt):  # stops after the checkpoint of step 4
        train(
            make("relu"), InMemoryStore(crash_at=6), cfg(checkpoint_every=4), folder, progress=False
        )
    assert not (folder / HSAE_CONFIG).exists() and (folder / CHECKPOINT_NAME).exists()
    assert stale_revision(folder) is None and set_aside_stale(folder) is None  # current: resumes
    _as_revision_1(folder)
    old = _files(folder)
    assert set_aside_stale(folder) == tmp_path / "run" / "seed0.rev1"  # no root: beside it
    assert not folder.exists() and _files(tmp_path / "run" / "seed0.rev1") == old
    assert "not reused" in capsys.readouterr().out
    # set aside again at the same revision: both kept
    folder.mkdir()
    (folder / CHECKPOINT_NAME).write_bytes(old[CHECKPOINT_NAME])
    assert set_aside_stale(folder) == tmp_path / "run" / "seed0.rev1~2"
    assert _files(tmp_path / "run" / "seed0.rev1") == old
    # nothing there, or nothing readable: nothing to set aside (the reader reports damage)
    assert set_aside_stale(folder) is None
    folder.mkdir()
    (folder / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    assert set_aside_stale(folder) is None and folder.is_dir()


def test_repair_keeps_the_exports_own_revision(tmp_path):
    """Rebuilding an old export's damaged SAELens files does not re-stamp it as current."""
    folder = save_sae(make("relu"), tmp_path / "sae")
    _as_revision_1(folder)
    (folder / checkpoint.SAE_LENS_CFG).unlink()
    load_sae(folder)  # repairs
    assert (folder / checkpoint.SAE_LENS_CFG).is_file()
    assert "trainer_revision" not in read_export_info(folder) and stale_revision(folder) == 1


def test_ground_truth_run_of_another_revision_is_retrained(tmp_path, monkeypatch):
    from hsae_utils.experiment.ground_truth import build_world, run_ground_truth, setup_for_profile

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    profile = get_profile("smoke", train_steps=12)
    world = build_world(setup_for_profile(profile))

    def run():
        return run_ground_truth(profile, world, seeds=(1,), configs=("topk",), workers=1)

    first = run()
    (folder,) = (profile.output_dir / "ground_truth").glob("*/topk/seed1")
    assert run().train_s.isna().all()  # reused
    _as_revision_1(folder)
    old = _files(folder)
    again = run()
    assert again.train_s.notna().all()  # retrained
    assert _files(folder.with_name("seed1.rev1")) == old
    assert read_export_info(folder)["trainer_revision"] == TRAINER_REVISION
    assert again.mcc.tolist() == first.mcc.tolist()


def test_train_refuses_to_resume_a_checkpoint_of_another_revision(tmp_path):
    """`train` itself (e.g. `api.train_sae` on an old folder) never resumes an older trainer's
    checkpoint into a new export: it stops and names the fix."""
    train(make("hierarchical"), InMemoryStore(), cfg(steps=8), tmp_path, progress=False)
    _as_revision_1(tmp_path)
    with pytest.raises(ValueError, match="trainer revision: checkpoint 1, now 2.*Delete"):
        train(make("hierarchical"), InMemoryStore(), cfg(steps=8), tmp_path, progress=False)


def test_launcher_does_not_announce_resuming_a_checkpoint_of_another_revision(
    tmp_path, monkeypatch, capsys
):
    """The Slurm training job names the runs it resumes; one of another revision is retrained
    (set aside by `train_runs`), so it is not named."""
    from hsae_utils.experiment import paper_runs
    from hsae_utils.pipeline import launcher
    from hsae_utils.runs import run_dir

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    monkeypatch.setattr(paper_runs, "train_runs", lambda *a, **k: None)  # only the note
    folder = run_dir(get_profile("smoke"), "topk", 42)
    with pytest.raises(KeyboardInterrupt):  # a checkpoint at step 4
        train(
            make("relu"), InMemoryStore(crash_at=6), cfg(checkpoint_every=4), folder, progress=False
        )
    said = launcher.training_job("smoke", tmp_path, ("topk",), 42, force=False)
    assert "resumed topk from step 4" in said and "resuming topk" in capsys.readouterr().out
    _as_revision_1(folder)
    said = launcher.training_job("smoke", tmp_path, ("topk",), 42, force=False)
    assert "resum" not in said + capsys.readouterr().out
