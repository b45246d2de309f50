"""The pipeline's heavy stages as cluster jobs, through submitit (`run_all.sh --launcher slurm`).

Three phases, each submitted, then waited for, before the next:
  1. activation caching: notebook 01 as one job (when its outputs are not done);
  2. training: one job per seed with every unfinished run of that seed (`experiments.train_runs`,
     one shared pass over the cache: runs that share a data pass share a job);
  3. evaluation: notebook 08 as one job.
Each job asks for what the profile's resource plan (`hsae_utils.pipeline.resources`) says its stage needs.
The skip, resume and failure rules are the local run's: a stage whose outputs are done is not
submitted, finished runs are not retrained, a killed training job's runs resume from their
checkpoints when the same command runs again, and a failed job stops the run, named with its log.
Afterwards `pipeline.run` runs the remaining notebooks here; they find the runs trained.

`--launcher local-executor` runs the same jobs as local subprocesses (submitit's LocalExecutor):
the test suite's way to run this code without a cluster.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hsae_utils.config import Profile, get_profile
from hsae_utils.pipeline.stages import Options, UsageError, is_done, run_stage, stage_stamp
from hsae_utils.runs import notebook_runs, run_dir

CLUSTERS = {"slurm": "slurm", "local-executor": "local"}  # --launcher -> submitit's cluster
CACHING, EVALUATION = "01_activation_caching.ipynb", "08_evaluation.ipynb"
# The plan's times and memory are estimates (GPU times unmeasured): ask for headroom. A job that
# runs out of time is killed like any other; its training resumes when the command runs again.
TIME_FACTOR, MIN_TIMEOUT_MIN = 3.0, 20
MEM_FACTOR, MEM_BASE_GB = 1.5, 4  # the base: Python, torch and the notebook kernel
CPUS_PER_JOB = 8  # data loading and the CPU side of the model
# The cluster's own settings (partition, account, constraint, ...), as submitit's parameters in
# JSON, e.g. HSAE_SUBMITIT_PARAMETERS='{"slurm_partition": "gpu", "slurm_account": "lab"}'.
PARAMETERS_ENV = "HSAE_SUBMITIT_PARAMETERS"


@dataclass(frozen=True)
class Request:
    """What one job asks the scheduler for."""

    gpus: int
    mem_gb: int
    timeout_min: int
    cpus: int = CPUS_PER_JOB

    def parameters(self) -> dict[str, Any]:
        return {
            "gpus_per_node": self.gpus,
            "mem_gb": self.mem_gb,
            "timeout_min": self.timeout_min,
            "cpus_per_task": self.cpus,
        }

    def __str__(self) -> str:
        return f"{self.gpus} GPU, {self.cpus} CPUs, {self.mem_gb} GB, {self.timeout_min} min"


def request(profile: Profile, host_ram: float, seconds: float) -> Request:
    from hsae_utils.pipeline.resources import GB, on_gpu

    return Request(
        gpus=1 if on_gpu(profile) else 0,
        mem_gb=math.ceil(MEM_FACTOR * host_ram / GB) + MEM_BASE_GB,
        timeout_min=max(MIN_TIMEOUT_MIN, math.ceil(TIME_FACTOR * seconds / 60)),
    )


@dataclass
class JobSpec:
    name: str
    fn: Callable[..., Any]
    args: tuple
    request: Request
    what: str  # for the messages
    on_failure: str  # what to do after a failure


# ----------------------------------------------------------------------------- the jobs' code


def notebook_job(nb: Path, opts: Options) -> str:
    """Inside a job: execute one notebook as the pipeline does (executed copy, finish marker)."""
    os.environ["HSAE_OUTPUT_ROOT"] = str(opts.output_root)
    if not run_stage(nb, opts):
        raise RuntimeError(
            f"notebook {nb.name} failed; the executed copy with the error is "
            f"{opts.out_dir / nb.name}"
        )
    return f"{nb.name} executed -> {opts.out_dir / nb.name}"


def training_job(
    profile_name: str, output_root: Path, names: tuple[str, ...], seed: int, force: bool
) -> str:
    """Inside a job: train `names` for `seed` in one pass over the cache; interrupted runs resume
    from their checkpoints (the trainer's rule), finished ones are reused."""
    os.environ["HSAE_OUTPUT_ROOT"] = str(output_root)
    from hsae_utils.experiment.paper_runs import train_runs
    from hsae_utils.method.checkpoint import load_training_checkpoint, stale_revision
    from hsae_utils.method.train import CHECKPOINT_NAME

    profile = get_profile(profile_name)
    resumed = []
    for name in names:
        ckpt = run_dir(profile, name, seed) / CHECKPOINT_NAME
        # a checkpoint of another trainer revision is set aside and retrained, not resumed
        if not force and ckpt.exists() and stale_revision(ckpt.parent) is None:
            resumed.append(f"{name} from step {load_training_checkpoint(ckpt)['step']}")
    if resumed:
        print(f"seed {seed}: resuming {', '.join(resumed)}", flush=True)
    train_runs(profile, list(names), seeds=(seed,), force=force)
    return f"seed {seed}: {len(names)} runs trained" + (
        f" (resumed {', '.join(resumed)})" if resumed else ""
    )


# ----------------------------------------------------------------------------- planning


def _selected(opts: Options, name: str) -> Path | None:
    return next((nb for nb in opts.notebooks if nb.name == name), None)


def _notebook_spec(nb: Path, opts: Options, req: Request, what: str) -> JobSpec:
    return JobSpec(
        f"hsae-{opts.profile}-{nb.name[:2]}",
        notebook_job,
        (nb, opts),
        req,
        what,
        f"fix the cause, then run the same command again (the executed copy: "
        f"{opts.out_dir / nb.name})",
    )


def training_notebooks(opts: Options, profile: Profile) -> list[Path]:
    return [nb for nb in opts.notebooks if notebook_runs(profile, nb.name)]


def runs_by_seed(opts: Options, profile: Profile) -> dict[int, list[str]]:
    """The runs the selected training notebooks still need, grouped by seed (one job each; a run
    that two notebooks list is trained once)."""
    from hsae_utils.experiment.paper_runs import is_finished

    seeds: dict[int, dict[str, None]] = {}  # ordered sets
    for nb in training_notebooks(opts, profile):
        for name, run_seeds in notebook_runs(profile, nb.name):
            for seed in run_seeds:
                if opts.force or not is_finished(run_dir(profile, name, seed), profile.train_steps):
                    seeds.setdefault(seed, {})[name] = None
    return {seed: list(names) for seed, names in seeds.items()}


def plan_jobs(opts: Options) -> list[list[JobSpec]]:
    """The phases (caching, training, evaluation) and their jobs; done stages have none."""
    from hsae_utils.pipeline.resources import caching_need, evaluation_need, training_run_need

    profile = get_profile(opts.profile)
    phases: list[list[JobSpec]] = []
    nb = _selected(opts, CACHING)
    if nb and not is_done(nb, opts, stage_stamp(nb, opts.profile)):
        need = caching_need(profile)
        phases.append(
            [
                _notebook_spec(
                    nb,
                    opts,
                    request(profile, need.host_ram, need.seconds),
                    "activation caching (notebook 01)",
                )
            ]
        )
    one = training_run_need(profile)
    training = []
    for seed, names in sorted(runs_by_seed(opts, profile).items()):
        req = request(profile, one.host_ram, one.seconds * len(names))
        training.append(
            JobSpec(
                f"hsae-{opts.profile}-train-seed{seed}",
                training_job,
                (opts.profile, opts.output_root, tuple(names), seed, opts.force),
                req,
                f"training seed {seed}: {', '.join(names)}",
                "run the same command again: finished runs are kept and the interrupted ones resume "
                "from their last checkpoint",
            )
        )
    if training:
        phases.append(training)
    nb = _selected(opts, EVALUATION)
    if nb and not is_done(nb, opts, stage_stamp(nb, opts.profile)):
        need = evaluation_need(profile)
        phases.append(
            [
                _notebook_spec(
                    nb,
                    opts,
                    request(profile, need.host_ram, need.seconds),
                    "evaluation (notebook 08)",
                )
            ]
        )
    return phases


# ----------------------------------------------------------------------------- submitting


def make_executor(launcher: str, folder: Path):
    """submitit's executor for `launcher`, with $HSAE_SUBMITIT_PARAMETERS applied; UsageError
    (naming the fix) when submitit is missing or those parameters are not valid."""
    try:
        import submitit
    except ImportError:
        raise UsageError(
            f"--launcher {launcher} needs submitit, which is not installed in "
            f"{sys.prefix}: run ./scripts/setup.sh (it installs the pinned "
            "submitit of requirements.lock), or use --launcher local."
        ) from None
    executor = submitit.AutoExecutor(folder=folder, cluster=CLUSTERS[launcher])
    raw = os.environ.get(PARAMETERS_ENV, "").strip()
    try:
        extra = json.loads(raw) if raw else {}
        if not isinstance(extra, dict):
            raise ValueError("not a JSON object")
        executor.update_parameters(**extra)
    except (ValueError, NameError, TypeError, AssertionError) as err:
        raise UsageError(
            f"{PARAMETERS_ENV}={raw!r} is not valid ({err}): give a JSON object of "
            """submitit parameters, e.g. '{"slurm_partition": "gpu"}'."""
        ) from None
    return executor


def submit(executor, spec: JobSpec):
    executor.update_parameters(name=spec.name, **spec.request.parameters())
    job = executor.submit(spec.fn, *spec.args)
    print(f"    submitted {spec.name} (job {job.job_id}; {spec.request}): {spec.what}", flush=True)
    return job


def wait(jobs: list[tuple[JobSpec, Any]]) -> bool:
    """Wait for every job of a phase; report each failure with its log files. True if all ran."""
    ok = True
    for spec, job in jobs:
        try:
            result = job.result()
        except Exception as err:  # the job raised, was killed, or timed out
            ok = False
            lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
            print(
                f"error: job {spec.name} (job {job.job_id}, {spec.what}) failed: "
                f"{lines[-1] if lines else type(err).__name__}\n"
                f"  its logs: {job.paths.stdout} and {job.paths.stderr}\n"
                f"  then: {spec.on_failure}",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"    job {spec.name} done: {result}", flush=True)
    return ok


@dataclass
class Launched:
    executed: set[str] = field(default_factory=set)  # notebooks the jobs executed
    trained: set[str] = field(default_factory=set)  # notebooks whose runs the jobs trained


def launch(opts: Options) -> Launched | None:
    """Run the phases as jobs; None when a job failed (reported)."""
    executor = make_executor(opts.launcher, opts.output_root / opts.profile / "jobs" / "%j")
    profile = get_profile(opts.profile)
    trained = {nb.name for nb in training_notebooks(opts, profile)}
    done = Launched()
    for phase in plan_jobs(opts):
        jobs = [(spec, submit(executor, spec)) for spec in phase]
        print(
            f"=== waiting for {len(jobs)} job(s) ({opts.launcher}; logs under "
            f"{opts.output_root / opts.profile / 'jobs'})",
            flush=True,
        )
        try:
            if not wait(jobs):
                return None
        except KeyboardInterrupt:  # Ctrl-C: the jobs stop too, as a local run's notebook does
            for _, job in jobs:
                job.cancel(check=False)
            raise
        for spec, _ in jobs:
            if spec.fn is notebook_job:
                done.executed.add(spec.args[0].name)
            else:
                done.trained |= trained
    return done
