"""The cluster launcher (hsae_utils/pipeline/launcher.py) under submitit's LocalExecutor, which runs the
same jobs as the Slurm executor as real local subprocesses: the smoke profile end to end through
`run_all.sh --launcher local-executor`, with the training job killed mid-run and resumed; and a
failing job reported by name with its log."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import torch
from safetensors.torch import load_file

from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.experiment.paper_runs import is_finished, train_runs
from hsae_utils.method.train import CHECKPOINT_NAME
from hsae_utils.pipeline import launcher
from hsae_utils.pipeline.cli import check_options, list_notebooks, parse_args, stage_stamp
from hsae_utils.pipeline.outputs import output_problems
from hsae_utils.runs import run_dir

pytest.importorskip(
    "submitit", reason="submitit is pinned in requirements.lock: run ./scripts/setup.sh"
)

# The stalling wrapper below runs inside the job: pickle this module's functions by value, so the
# job process need not import the tests package.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run_all(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HSAE_OUTPUT_ROOT": str(out), "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HSAE_NOTEBOOK_DIR", None)
    return subprocess.run(
        [
            str(REPO_ROOT / "run_all.sh"),
            "--no-setup",
            "--profile",
            "smoke",
            "--launcher",
            "local-executor",
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def stall_after_checkpoints(n_saves: int, marker: Path, fn, *args):
    """Run job function `fn`, but hang after the n-th training checkpoint is written (in the
    job's process), so the test can kill the job in the middle of training."""
    from hsae_utils.method import train

    real, saves = train.save_training_checkpoint, []

    def save(*a, **kw):
        real(*a, **kw)
        saves.append(1)
        if len(saves) == n_saves:
            marker.write_text(str(os.getpid()))
            time.sleep(600)

    train.save_training_checkpoint = save
    return fn(*args)


def test_smoke_end_to_end_through_jobs_with_a_training_job_killed_and_resumed(
    tmp_path, monkeypatch
):
    out = tmp_path / "out"
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(out))
    P = get_profile("smoke")

    # 1. The activation cache: notebook 01 as a job.
    cached = run_all(out, "--only", "01")
    assert cached.returncode == 0, cached.stdout + cached.stderr
    assert "submitted hsae-smoke-01" in cached.stdout
    assert output_problems(P, "01_activation_caching.ipynb") == []

    # 2. The training job of seed 42 (every run: one shared pass), killed once all of its SAEs
    # wrote their first checkpoint.
    opts = check_options(parse_args(["--profile", "smoke", "--launcher", "local-executor"]))
    (spec,) = next(
        phase for phase in launcher.plan_jobs(opts) if phase[0].fn is launcher.training_job
    )
    names = spec.args[2]
    assert len(names) == 13 and spec.args[3] == 42  # 3 baselines, 5 sweep runs, 5 stages
    executor = launcher.make_executor("local-executor", tmp_path / "jobs" / "%j")
    marker = tmp_path / "stalled"
    job = launcher.submit(
        executor,
        dataclasses.replace(
            spec, fn=stall_after_checkpoints, args=(len(names), marker, spec.fn, *spec.args)
        ),
    )
    deadline = time.time() + 600
    while not marker.exists():
        assert not job.done(), job.stderr()
        assert time.time() < deadline, "the training job wrote no checkpoint in 10 minutes"
        time.sleep(0.2)
    job.cancel()
    with pytest.raises(Exception):  # noqa: B017 (submitit's error for a killed job)
        job.result()
    for name in names:
        folder = run_dir(P, name, 42)
        assert (folder / CHECKPOINT_NAME).exists() and not is_finished(folder, P.train_steps)

    # 3. The whole pipeline through jobs: 01 skipped, training resumed, evaluation as a job.
    full = run_all(out)
    assert full.returncode == 0, full.stdout + full.stderr
    assert "=== 01_activation_caching.ipynb: done before, skipped" in full.stdout
    step = P.checkpoint_every
    assert f"resumed {', '.join(f'{n} from step {step}' for n in names)}" in full.stdout
    assert "submitted hsae-smoke-08" in full.stdout
    notebooks = list_notebooks(REPO_ROOT / "notebooks")
    for nb in notebooks:
        assert output_problems(P, nb.name) == [], nb.name
        marker_file = out / "smoke" / "notebooks" / ".done" / nb.name
        assert marker_file.read_text().strip() == stage_stamp(nb, "smoke"), nb.name

    # The resumed runs end with the weights of an uninterrupted pass (bit-identical on CPU), for
    # three of them: TopK, BatchTopK (its threshold) and the full HierarchicalSAE (windows,
    # resampling and merging RNG). A pass ends each run as it would alone (test_train_many.py).
    ref_root, compared = tmp_path / "ref", ("topk", "batchtopk", "stage5_clustering")
    shutil.copytree(P.cache_dir, ref_root / "smoke" / "activations")
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(ref_root))
    train_runs(get_profile("smoke"), list(compared), seeds=(42,), progress=False)
    for name in compared:
        ref = load_file(run_dir(get_profile("smoke"), name, 42) / "sae_weights.safetensors")
        got = load_file(out / "smoke" / "saes" / name / "seed42" / "sae_weights.safetensors")
        assert ref.keys() == got.keys()
        assert all(torch.equal(ref[k], got[k]) for k in ref), name

    # 4. Nothing left to do: a second run submits no job and skips every notebook.
    again = run_all(out)
    assert again.returncode == 0, again.stderr
    assert "submitted" not in again.stdout
    assert again.stdout.count("done before, skipped") == len(notebooks)


def test_a_failed_job_stops_the_run_and_is_named_with_its_log(tmp_path):
    out = tmp_path / "out"
    proc = run_all(out, "--only", "02")  # no activation cache: the training job fails
    assert proc.returncode == 1
    assert "error: job hsae-smoke-train-seed42" in proc.stderr
    logs = proc.stderr.split("its logs: ", 1)[1].split("\n", 1)[0].split(" and ")
    assert all(Path(log).is_file() for log in logs)
    assert "CacheError" in Path(logs[1]).read_text()  # the job's traceback is in its log
    assert "resume from their last checkpoint" in proc.stderr
    assert not (out / "smoke" / "notebooks" / "02_baselines.ipynb").exists()  # stopped


def test_jobs_per_seed_and_their_sbatch_requests_from_the_plan(tmp_path, monkeypatch):
    """`paper`: one training job per seed with every run of that seed; the requests of the plan
    reach the sbatch script submitit writes (a stand-in `srun` on PATH lets submitit's Slurm
    executor start; nothing is submitted)."""
    from hsae_utils.pipeline.resources import training_run_need
    from hsae_utils.runs import RUNS, sweep_runs

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path / "out"))
    P = get_profile("paper")
    opts = check_options(parse_args(["--profile", "paper", "--launcher", "local-executor"]))
    phases = launcher.plan_jobs(opts)
    assert [[s.name for s in phase] for phase in phases] == [
        ["hsae-paper-01"],
        [f"hsae-paper-train-seed{s}" for s in P.seeds],
        ["hsae-paper-08"],
    ]
    for spec in phases[1]:
        seed = spec.args[3]
        want = set(RUNS) | ({r.name for r in sweep_runs(P)} if seed in P.sweep_seeds else set())
        assert set(spec.args[2]) == want
        hours = training_run_need(P).seconds * len(want) / 3600
        assert spec.request.gpus == 1 and spec.request.timeout_min >= 60 * hours

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv(launcher.PARAMETERS_ENV, '{"slurm_partition": "gpu"}')
    executor = launcher.make_executor("slurm", tmp_path / "jobs" / "%j")
    spec = phases[1][0]
    executor.update_parameters(name=spec.name, **spec.request.parameters())
    sbatch = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in (
        f"--gpus-per-node={spec.request.gpus}",
        f"--mem={spec.request.mem_gb}GB",
        f"--time={spec.request.timeout_min}",
        f"--cpus-per-task={spec.request.cpus}",
        "--partition=gpu",
        f"--job-name={spec.name}",
    ):
        assert f"#SBATCH {line}\n" in sbatch, line

    monkeypatch.setenv(launcher.PARAMETERS_ENV, '{"slurm_partion": "gpu"}')  # a typo
    with pytest.raises(launcher.UsageError, match="HSAE_SUBMITIT_PARAMETERS=.*not valid"):
        launcher.make_executor("slurm", tmp_path / "jobs" / "%j")
