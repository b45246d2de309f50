"""The notebook loop behind `run_all.sh`: run every notebook in order with papermill for a profile.

    python -m hsae_utils.pipeline.cli [--profile NAME] [--only NN[,NN]] [--force] [--wait] [--plan]
                                  [--launcher local|slurm|local-executor] [--check-only]

Every option is checked before any work (an unknown profile, a prefix matching no notebook, an
output root that cannot be created or written), then the profile's resources are checked
(`hsae_utils.pipeline.resources check`, when that module exists), then the output folder
`$HSAE_OUTPUT_ROOT/<profile>` is locked for the whole run (`hsae_utils.pipeline.lock`).

A notebook is skipped when it finished before for the same notebook code (cells without outputs)
and the same profile definition, and its outputs are still complete and valid (`hsae_utils.pipeline.outputs`).
Only the standard library is imported at the top, so `--check-only` runs before the set-up.
The loop is `run_stage` per notebook. `--launcher slurm` (or `local-executor`, submitit's local
stand-in) first runs the heavy stages as jobs (`hsae_utils.pipeline.launcher`: caching, training one job per
seed, evaluation), then this loop runs the rest, finding those stages' outputs done.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

from hsae_utils.pipeline.stages import (  # noqa: E402
    FORCE_PARAMETERS,
    Options,
    UsageError,
    is_done,
    notebook_sha256,
    record_rate,
    record_setup,
    record_time,
    run_stage,
    stage_stamp,
)
from hsae_utils.timing import ROOFLINE_RANGE_GFLOPS  # noqa: E402

__all__ = [
    "FORCE_PARAMETERS",
    "Options",
    "UsageError",
    "is_done",
    "notebook_sha256",
    "record_time",
    "run_stage",
    "stage_stamp",
    "main",
    "run",
    "budget_checks",
]


# Parameters set to True by --force, where a notebook declares them.
def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="run_all.sh", description="Run the notebooks for a profile.")
    ap.add_argument("--profile", default="local", metavar="NAME", help="default: local")
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NN",
        help="notebook name prefixes (repeat or comma-separate), e.g. --only 02,03",
    )
    ap.add_argument("--force", action="store_true", help="re-run and recompute everything")
    ap.add_argument(
        "--wait",
        action="store_true",
        help="wait for another run of this profile and output root instead of refusing",
    )
    ap.add_argument("--plan", action="store_true", help="print the resource plan and exit")
    ap.add_argument(
        "--launcher",
        default="local",
        choices=("local", "slurm", "local-executor"),
        help="local (default): every notebook here; slurm: caching, training and "
        "evaluation as Slurm jobs through submitit; local-executor: the same "
        "jobs as local subprocesses (submitit's LocalExecutor, for tests)",
    )
    ap.add_argument("--check-only", action="store_true", help="check the options and exit")
    ap.add_argument("--no-setup", action="store_true", help="(read by run_all.sh)")
    return ap.parse_args(argv)


def list_notebooks(nb_dir: Path) -> list[Path]:
    return sorted(p for p in nb_dir.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(notebooks: list[Path], only: list[str]) -> list[Path]:
    prefixes = [p.strip() for item in only for p in item.split(",") if p.strip()]
    names = [nb.name for nb in notebooks]
    unmatched = [p for p in prefixes if not any(n.startswith(p) for n in names)]
    if unmatched:
        raise UsageError(
            f"--only {','.join(unmatched)} matches no notebook; the notebooks are: "
            f"{', '.join(names) or '(none)'}."
        )
    return [nb for nb in notebooks if not prefixes or any(nb.name.startswith(p) for p in prefixes)]


def check_output_root(root: Path) -> Path:
    """`root` made absolute, created and proven writable (a temporary file), or UsageError."""
    root = Path(os.path.abspath(os.path.expanduser(str(root))))
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise UsageError(
            f"The output root {root} cannot be created or written ({err.strerror or err}): "
            "set HSAE_OUTPUT_ROOT to a writable folder."
        ) from None
    return root


def check_options(args: argparse.Namespace, env: dict | None = None) -> Options:
    from hsae_utils.config import get_profile

    env = os.environ if env is None else env
    try:
        get_profile(args.profile)
    except ValueError as err:
        raise UsageError(str(err)) from None
    nb_dir = Path(env.get("HSAE_NOTEBOOK_DIR") or REPO_ROOT / "notebooks")
    notebooks = list_notebooks(nb_dir)
    if not notebooks:
        raise UsageError(f"No notebooks NN_*.ipynb in {nb_dir}: check HSAE_NOTEBOOK_DIR.")
    selected = select_notebooks(notebooks, args.only)
    if args.launcher == "slurm" and not args.plan and shutil.which("sbatch") is None:
        raise UsageError(
            "--launcher slurm submits jobs with Slurm's sbatch, which is not on this "
            "machine's PATH: run on the cluster's login node (or load its Slurm "
            "module), or use --launcher local to run here."
        )
    root = Path(env.get("HSAE_OUTPUT_ROOT") or REPO_ROOT / "outputs")
    if not args.plan:  # the plan creates nothing
        root = check_output_root(root)
    return Options(
        args.profile, selected, bool(args.only), args.force, args.wait, nb_dir, root, args.launcher
    )


# ----------------------------------------------------------------------------- notebooks


PIPELINE_BUDGETS_MIN = {"local": {"01-09": 22.0, "all": 35.0}, "smoke": {"all": 5.0}}


def budget_checks(timings: dict, profile_name: str) -> list[tuple[str, float, float, float, bool]]:
    """(part, minutes, slow-end minutes, limit, within) for each budget of `profile_name`, from a
    timings.json. Budgets are met on the slow end of our machines: where the run recorded its
    matmul rate, the notebooks' minutes are scaled to the slow end's rate (as if every second were
    a matmul's: an estimate), the set-up's are not (downloads and installs)."""
    notebooks = timings.get("notebooks", {})
    rate = (timings.get("machine") or {}).get("matmul_gflops")
    scale = max(1.0, rate / ROOFLINE_RANGE_GFLOPS[0]) if rate else 1.0
    nb_s = {
        "01-09": sum(v["seconds"] for k, v in notebooks.items() if k[:2] <= "09"),
        "all": timings.get("total_s", sum(v["seconds"] for v in notebooks.values())),
    }
    # the set-up counts when run_all.sh recorded it (issue 25: "set-up included")
    setup_s = {"01-09": 0.0, "all": timings.get("setup_s", 0.0)}
    checks = []
    for part, limit in PIPELINE_BUDGETS_MIN.get(profile_name, {}).items():
        minutes = (nb_s[part] + setup_s[part]) / 60
        slow = (nb_s[part] * scale + setup_s[part]) / 60
        checks.append((part, minutes, slow, limit, slow <= limit))
    return checks


def runs_on_cpu(profile_name: str) -> bool:
    """Whether the profile's notebooks compute on this machine's CPU (device "cpu", or "auto"
    without a GPU)."""
    from hsae_utils.config import get_profile

    device = get_profile(profile_name).device
    if device == "auto":
        import torch

        return not torch.cuda.is_available()
    return device == "cpu"


def resources(command: str, profile: str, *options: str) -> int:
    """`python -m hsae_utils.pipeline.resources COMMAND PROFILE [OPTIONS]`'s exit code; 0 with a note when
    that module is not there."""
    if importlib.util.find_spec("hsae_utils.pipeline.resources") is None:
        print(f"note: no resource {command} (hsae_utils.pipeline.resources is not installed)")
        return 0
    return subprocess.run(
        [sys.executable, "-m", "hsae_utils.pipeline.resources", command, profile, *options]
    ).returncode


def run(opts: Options) -> int:
    from hsae_utils.pipeline.lock import run_lock

    # cluster jobs request their own RAM and GPU: this machine (a login node) needs neither
    if resources("check", opts.profile, *(["--jobs"] if opts.launcher != "local" else [])) != 0:
        return 1
    start = time.time()
    with run_lock(opts.output_root / opts.profile, wait=opts.wait) as lock_fd:
        (opts.out_dir / ".done").mkdir(parents=True, exist_ok=True)
        if os.environ.get("HSAE_SETUP_SECONDS", "").isdigit():  # run_all.sh ran the set-up
            record_setup(opts.out_dir / "timings.json", int(os.environ["HSAE_SETUP_SECONDS"]))
        if runs_on_cpu(opts.profile):
            from hsae_utils.timing import matmul_gflops

            rate = matmul_gflops()
            record_rate(opts.out_dir / "timings.json", rate)
            print(f"fp32 matmul rate of this machine: {rate:.0f} GFLOP/s")
        executed, trained = set(), set()  # notebooks run as jobs; whose runs jobs trained
        if opts.launcher != "local":
            from hsae_utils.pipeline.launcher import launch

            launched = launch(opts)
            if launched is None:  # a job failed; launch() named it and its log
                return 1
            executed, trained = launched.executed, launched.trained
        for nb in opts.notebooks:
            if nb.name in executed:
                continue
            if is_done(nb, opts, stage_stamp(nb, opts.profile)):
                print(f"=== {nb.name}: done before, skipped (--force re-runs it)")
                continue
            # a notebook whose runs a job just trained (--force included) reuses them
            nb_opts = dataclasses.replace(opts, force=False) if nb.name in trained else opts
            if not run_stage(nb, nb_opts, lock_fd):
                return 1
    print(
        f"All selected notebooks ran for profile '{opts.profile}' in {time.time() - start:.0f} s."
    )
    print(
        f"Outputs: {opts.output_root / opts.profile}/ (activations, saes, results), "
        f"figures: figures/, notebooks: {opts.out_dir}/"
    )
    # the generated blocks: results in docs/results.md, findings in README.md (update_readme.py)
    pages = {REPO_ROOT / "docs" / "results.md": "results", REPO_ROOT / "README.md": "findings"}
    if (
        not opts.only
        and opts.nb_dir.resolve() == (REPO_ROOT / "notebooks").resolve()
        and any(
            page.is_file() and f"<!-- {kind}:{opts.profile}:start -->" in page.read_text()
            for page, kind in pages.items()
        )
    ):
        return subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "scripts" / "update_readme.py"),
                "--profile",
                opts.profile,
            ]
        ).returncode
    return 0


def main(argv: list[str] | None = None) -> int:
    from hsae_utils.pipeline.lock import LockHeld

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        opts = check_options(args)
        if args.check_only:
            return 0
        if args.plan:
            return resources("plan", opts.profile)
        return run(opts)
    except (UsageError, LockHeld) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 3


if __name__ == "__main__":
    sys.exit(main())
