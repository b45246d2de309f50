"""One notebook as a pipeline stage: the options every stage shares, papermill's call, the
"already done" stamp and its skip-check, and the timing record. Used by the command line
(`cli.py`) and by the cluster launcher (`launcher.py`), so neither imports the other."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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


def notebook_sha256(path: Path) -> str:
    """The hash of a notebook's code: cell types and sources, not outputs or execution counts,
    so a notebook committed with its outputs keeps its finish marker."""
    cells = json.loads(Path(path).read_text())["cells"]
    code = [
        (c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
        for c in cells
    ]
    return hashlib.sha256(json.dumps(code).encode()).hexdigest()


def declared_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged "parameters"."""
    for cell in json.loads(Path(path).read_text())["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return {
                t.id
                for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            }
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
    cmd = [
        sys.executable,
        "-m",
        "papermill",
        str(nb),
        str(opts.out_dir / nb.name),
        *papermill_parameters(nb, opts.profile, opts.force),
        "--cwd",
        str(opts.nb_dir),
        "--kernel",
        "python3",
        "--progress-bar",
    ]
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
    from hsae_utils.io import read_json, write_json_atomic

    t = read_json(path) if path.exists() else {"notebooks": {}}
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    now = datetime.now().astimezone().isoformat(timespec="seconds")
    # the 1-minute load average as the notebook ended: a time measured on a busy machine says so
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t["notebooks"][name] = {"seconds": seconds, "date": now, "load_1min": load}
    t.update(
        date=now,
        total_s=sum(n["seconds"] for n in t["notebooks"].values()),
        # other machine facts (the matmul rate) are kept
        machine={**t.get("machine", {}), "nproc": nproc, "cpu_model": cpu},
    )
    write_json_atomic(path, t)


def record_rate(path: Path, gflops: float) -> None:
    """This machine's fp32 matmul rate (`timing.matmul_gflops`) as the pipeline started, beside
    the times it explains: our 2-core machines differ ~1.6x in it, and budgets hold on the slow
    end (`cli.budget_checks`)."""
    from hsae_utils.io import read_json, write_json_atomic

    t = read_json(path) if path.exists() else {"notebooks": {}}
    t["machine"] = {**t.get("machine", {}), "matmul_gflops": round(float(gflops), 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, t)


def record_setup(path: Path, seconds: float) -> None:
    """The wall seconds of `scripts/setup.sh` as `run_all.sh` last ran it, beside the notebooks'
    in timings.json: the budgets count the set-up (a fresh machine's is minutes)."""
    from hsae_utils.io import read_json, write_json_atomic

    t = read_json(path) if path.exists() else {"notebooks": {}}
    t["setup_s"] = float(seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, t)


# Wall-time budgets of the default pipelines on 2 cores, in minutes, per part: "01-09" the
# notebooks of the first pipeline, "all" every notebook (issue 16; docs/results.md's timing line and
# scripts/benchmark.py section 6 both check them).
def is_done(nb: Path, opts: Options, stamp: str) -> bool:
    from hsae_utils.config import get_profile
    from hsae_utils.pipeline.outputs import output_problems as stage_problems

    marker = opts.out_dir / ".done" / nb.name
    if opts.force or opts.only or not (opts.out_dir / nb.name).is_file():
        return False
    if not marker.is_file() or marker.read_text().strip() != stamp:
        return False
    problems = stage_problems(get_profile(opts.profile), nb.name)
    for problem in problems:
        print(f"    outputs of {nb.name} incomplete: {problem}")
    return not problems


def stage_stamp(nb: Path, profile: str) -> str:
    """What a notebook's finish marker holds: its code's hash and the profile definition's."""
    from hsae_utils.config import get_profile
    from hsae_utils.io import sha256_json

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
        print(
            f"error: notebook {nb.name} failed; the executed copy with the error is "
            f"{opts.out_dir / nb.name}",
            file=sys.stderr,
        )
        return False
    marker.write_text(stamp + "\n")
    secs = round(time.time() - t0)
    try:
        record_time(opts.out_dir / "timings.json", nb.name, secs)
    except (OSError, ValueError) as err:
        print(f"warning: timings.json not updated ({err})", file=sys.stderr)
    print(f"    done in {secs} s -> {opts.out_dir / nb.name}")
    return True
