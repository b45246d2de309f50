"""The notebook loop behind `run_all.sh`: run every notebook in order with papermill for a profile.

    python -m hsae_utils.pipeline [--profile NAME] [--only NN[,NN]] [--force] [--wait] [--plan]
                                  [--launcher local|slurm|local-executor] [--check-only]

Every option is checked before any work (an unknown profile, a prefix matching no notebook, an
output root that cannot be created or written), then the profile's resources are checked
(`hsae_utils.resources check`, when that module exists), then the output folder
`$HSAE_OUTPUT_ROOT/<profile>` is locked for the whole run (`hsae_utils.lock`).

A notebook is skipped when it finished before for the same notebook code (cells without outputs)
and the same profile definition, and its outputs are still complete and valid (`hsae_utils.notebook_outputs`).
Only the standard library is imported at the top, so `--check-only` runs before the set-up.
The loop is `run_stage` per notebook. `--launcher slurm` (or `local-executor`, submitit's local
stand-in) first runs the heavy stages as jobs (`hsae_utils.launcher`: caching, training one job per
seed, evaluation), then this loop runs the rest, finding those stages' outputs done.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Parameters set to True by --force, where a notebook declares them.
FORCE_PARAMETERS = {"rebuild_cache": True, "force_retrain": True}


class UsageError(ValueError):
    """A bad option or environment; the message names the fix."""


@dataclass
class Options:
    profile: str
    notebooks: list[Path]  # selected, in order
    only: bool
    force: bool
    wait: bool
    nb_dir: Path
    output_root: Path
    launcher: str = "local"

    @property
    def out_dir(self) -> Path:
        return self.output_root / self.profile / "notebooks"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="run_all.sh", description="Run the notebooks for a profile.")
    ap.add_argument("--profile", default="local", metavar="NAME", help="default: local")
    ap.add_argument("--only", action="append", default=[], metavar="NN",
                    help="notebook name prefixes (repeat or comma-separate), e.g. --only 02,03")
    ap.add_argument("--force", action="store_true", help="re-run and recompute everything")
    ap.add_argument("--wait", action="store_true",
                    help="wait for another run of this profile and output root instead of refusing")
    ap.add_argument("--plan", action="store_true", help="print the resource plan and exit")
    ap.add_argument("--launcher", default="local", choices=("local", "slurm", "local-executor"),
                    help="local (default): every notebook here; slurm: caching, training and "
                         "evaluation as Slurm jobs through submitit; local-executor: the same "
                         "jobs as local subprocesses (submitit's LocalExecutor, for tests)")
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
        raise UsageError(f"--only {','.join(unmatched)} matches no notebook; the notebooks are: "
                         f"{', '.join(names) or '(none)'}.")
    return [nb for nb in notebooks if not prefixes or any(nb.name.startswith(p) for p in prefixes)]


def check_output_root(root: Path) -> Path:
    """`root` made absolute, created and proven writable (a temporary file), or UsageError."""
    root = Path(os.path.abspath(os.path.expanduser(str(root))))
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise UsageError(f"The output root {root} cannot be created or written ({err.strerror or err}): "
                         "set HSAE_OUTPUT_ROOT to a writable folder.") from None
    return root


def check_options(args: argparse.Namespace, env: dict | None = None) -> Options:
    from .config import get_profile

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
        raise UsageError("--launcher slurm submits jobs with Slurm's sbatch, which is not on this "
                         "machine's PATH: run on the cluster's login node (or load its Slurm "
                         "module), or use --launcher local to run here.")
    root = Path(env.get("HSAE_OUTPUT_ROOT") or REPO_ROOT / "outputs")
    if not args.plan:  # the plan creates nothing
        root = check_output_root(root)
    return Options(args.profile, selected, bool(args.only), args.force, args.wait, nb_dir, root,
                   args.launcher)


# ----------------------------------------------------------------------------- notebooks


def notebook_sha256(path: Path) -> str:
    """The hash of a notebook's code: cell types and sources, not outputs or execution counts,
    so a notebook committed with its outputs keeps its finish marker."""
    cells = json.loads(Path(path).read_text())["cells"]
    code = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
            for c in cells]
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()


def declared_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged "parameters"."""
    for cell in json.loads(Path(path).read_text())["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return {t.id for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)}
    return set()


def papermill_parameters(path: Path, profile: str, force: bool) -> list[str]:
    params = ["-p", "profile", profile]
    if force:
        declared = declared_parameters(path)
        for name, value in FORCE_PARAMETERS.items():
            if name in declared:
                params += ["-p", name, str(value)]
    return params


def run_notebook(nb: Path, opts: Options, lock_fd: int | None = None) -> bool:
    """Execute one notebook into opts.out_dir with papermill; True when it finished. The lock's
    descriptor is inherited, so the lock stays held while papermill runs."""
    env = {**os.environ, "HSAE_PROFILE": opts.profile, "HSAE_OUTPUT_ROOT": str(opts.output_root)}
    cmd = [sys.executable, "-m", "papermill", str(nb), str(opts.out_dir / nb.name),
           *papermill_parameters(nb, opts.profile, opts.force),
           "--cwd", str(opts.nb_dir), "--kernel", "python3", "--progress-bar"]
    proc = subprocess.Popen(cmd, env=env, pass_fds=(lock_fd,) if lock_fd is not None else ())
    # `kill PID` of this runner stops the notebook too (Ctrl-C reaches the whole process group)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
    try:
        return proc.wait() == 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def record_time(path: Path, name: str, seconds: float) -> None:
    """Wall seconds of each notebook and the machine, in timings.json (scripts/benchmark.py
    reads it). A notebook skipped as done keeps the time of its last run."""
    from .io import read_json, write_json_atomic

    t = read_json(path) if path.exists() else {"notebooks": {}}
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    now = datetime.now().astimezone().isoformat(timespec="seconds")
    # the 1-minute load average as the notebook ended: a time measured on a busy machine says so
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t["notebooks"][name] = {"seconds": seconds, "date": now, "load_1min": load}
    t.update(date=now, total_s=sum(n["seconds"] for n in t["notebooks"].values()),
             machine={"nproc": nproc, "cpu_model": cpu})
    write_json_atomic(path, t)


# Wall-time budgets of the default pipelines on 2 cores, in minutes, per part: "01-09" the
# notebooks of the first pipeline, "all" every notebook (issue 16; README's timing line and
# scripts/benchmark.py section 6 both check them).
PIPELINE_BUDGETS_MIN = {"local": {"01-09": 22.0, "all": 35.0}, "smoke": {"all": 5.0}}


def budget_checks(timings: dict, profile_name: str) -> list[tuple[str, float, float, bool]]:
    """(part, minutes, limit, within) for each budget of `profile_name`, from a timings.json."""
    notebooks = timings.get("notebooks", {})
    minutes = {"01-09": sum(v["seconds"] for k, v in notebooks.items() if k[:2] <= "09") / 60,
               "all": timings.get("total_s", sum(v["seconds"] for v in notebooks.values())) / 60}
    return [(part, minutes[part], limit, minutes[part] <= limit)
            for part, limit in PIPELINE_BUDGETS_MIN.get(profile_name, {}).items()]


def is_done(nb: Path, opts: Options, stamp: str) -> bool:
    from .config import get_profile
    from .notebook_outputs import output_problems as stage_problems

    marker = opts.out_dir / ".done" / nb.name
    if opts.force or opts.only or not (opts.out_dir / nb.name).is_file():
        return False
    if not marker.is_file() or marker.read_text().strip() != stamp:
        return False
    problems = stage_problems(get_profile(opts.profile), nb.name)
    for problem in problems:
        print(f"    outputs of {nb.name} incomplete: {problem}")
    return not problems


def resources(command: str, profile: str, *options: str) -> int:
    """`python -m hsae_utils.resources COMMAND PROFILE [OPTIONS]`'s exit code; 0 with a note when
    that module is not there."""
    if importlib.util.find_spec("hsae_utils.resources") is None:
        print(f"note: no resource {command} (hsae_utils.resources is not installed)")
        return 0
    return subprocess.run([sys.executable, "-m", "hsae_utils.resources", command, profile,
                           *options]).returncode


def stage_stamp(nb: Path, profile: str) -> str:
    """What a notebook's finish marker holds: its code's hash and the profile definition's."""
    from .config import get_profile
    from .io import sha256_json

    profile_sha = sha256_json(get_profile(profile).to_dict())
    return hashlib.sha256(f"{notebook_sha256(nb)}\n{profile_sha}".encode()).hexdigest()


def run_stage(nb: Path, opts: Options, lock_fd: int | None = None) -> bool:
    """Execute one notebook, then write its finish marker and time; False (reported) on failure.
    The cluster launcher calls this inside a job for the notebooks it runs as jobs."""
    stamp = stage_stamp(nb, opts.profile)
    print(f"=== {nb.name} (profile: {opts.profile})", flush=True)
    marker = opts.out_dir / ".done" / nb.name
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    t0 = time.time()
    if not run_notebook(nb, opts, lock_fd):
        print(f"error: notebook {nb.name} failed; the executed copy with the error is "
              f"{opts.out_dir / nb.name}", file=sys.stderr)
        return False
    marker.write_text(stamp + "\n")
    secs = round(time.time() - t0)
    try:
        record_time(opts.out_dir / "timings.json", nb.name, secs)
    except (OSError, ValueError) as err:
        print(f"warning: timings.json not updated ({err})", file=sys.stderr)
    print(f"    done in {secs} s -> {opts.out_dir / nb.name}")
    return True


def run(opts: Options) -> int:
    from .lock import run_lock

    # cluster jobs request their own RAM and GPU: this machine (a login node) needs neither
    if resources("check", opts.profile, *(["--jobs"] if opts.launcher != "local" else [])) != 0:
        return 1
    start = time.time()
    with run_lock(opts.output_root / opts.profile, wait=opts.wait) as lock_fd:
        (opts.out_dir / ".done").mkdir(parents=True, exist_ok=True)
        executed, trained = set(), set()  # notebooks run as jobs; whose runs jobs trained
        if opts.launcher != "local":
            from .launcher import launch

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
    print(f"All selected notebooks ran for profile '{opts.profile}' in {time.time() - start:.0f} s.")
    print(f"Outputs: {opts.output_root / opts.profile}/ (activations, saes, results), "
          f"figures: figures/, notebooks: {opts.out_dir}/")
    readme = REPO_ROOT / "README.md"
    if (not opts.only and opts.nb_dir.resolve() == (REPO_ROOT / "notebooks").resolve()
            and f"<!-- results:{opts.profile}:start -->" in readme.read_text()):
        return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "update_readme.py"),
                               "--profile", opts.profile]).returncode
    return 0


def main(argv: list[str] | None = None) -> int:
    from .lock import LockHeld

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
