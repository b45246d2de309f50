"""Notebook parameters (issue 17, case 4): what papermill passes is checked before any work.

The end-to-end cases run real papermill on a small notebook shaped like ours (a parameters cell,
then the check_parameters line), so the values are exactly the ones papermill's -p / -r / -y
produce.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nbformat
import pytest

from hsae_utils.config import REPO_ROOT
from hsae_utils.pipeline.params import ParameterError, check_parameters


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True),
        (False, False),
        ("True", True),
        ("false", False),
        ("FALSE", False),
        (1, True),
        (0, False),
        ("1", True),
        ("0", False),
    ],
)
def test_boolean_spellings_papermill_produces(value, expected):
    assert check_parameters(force_retrain=value) == (expected,)


@pytest.mark.parametrize("value", ["no", "yes", "", "2", 2, None, 0.0, "Tru"])
def test_other_boolean_spellings_are_refused(value):
    with pytest.raises(
        ParameterError, match="rebuild_cache=.* is not a boolean: pass True or False"
    ):
        check_parameters(rebuild_cache=value)


def test_overrides_must_be_a_dict_of_the_runs_config_fields():
    assert check_parameters(overrides='{"resample_every": 200}', run="stage2_resampling") == (
        {"resample_every": 200},
    )
    assert check_parameters(overrides="", run="stage2_resampling") == ({},)
    with pytest.raises(ParameterError, match="overrides=5 must be a dict"):
        check_parameters(overrides=5)
    with pytest.raises(ParameterError, match="not a dict literal"):
        check_parameters(overrides="{resample_every: 200")
    with pytest.raises(
        ParameterError,
        match=r"Unknown HierarchicalSAEConfig field.*\['resample'\]"
        r".*Valid fields: .*resample_every",
    ):
        check_parameters(profile="smoke", overrides={"resample": 200}, run="stage2_resampling")


def test_profile_metrics_and_unknown_parameters():
    with pytest.raises(ParameterError, match="Unknown profile 'locl'. Valid profiles: .*local"):
        check_parameters(profile="locl")
    with pytest.raises(ParameterError, match="must be a profile name"):
        check_parameters(profile=3)
    assert check_parameters(metrics=" core , probing") == ("core,probing",)
    with pytest.raises(ParameterError, match=r"\['probe'\].*core,absorption,probing"):
        check_parameters(metrics="core,probe")
    with pytest.raises(ParameterError, match=r"No check for parameter\(s\) \['force'\]"):
        check_parameters(force=True)


def test_counts_and_seeds_are_non_negative_integers():
    assert check_parameters(seed=42, n_contexts="3", autointerp_latents=0) == (42, 3, 0)
    for bad in (-1, 2.5, True, "three"):
        with pytest.raises(ParameterError, match="non-negative integer"):
            check_parameters(n_contexts=bad)


# ----------------------------------------------------------------------------- real papermill


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """Parameters as in notebooks 03-07, the check line, then a cell reporting what it got."""
    folder = tmp_path_factory.mktemp("params_nb")
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    params = nbformat.v4.new_code_cell(
        'profile = "smoke"\nforce_retrain = False\noverrides = {}\nout = "got.json"'
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "from hsae_utils.pipeline.params import check_parameters\n"
            "profile, force_retrain, overrides = check_parameters(profile=profile, "
            'force_retrain=force_retrain, overrides=overrides, run="stage2_resampling")'
        ),
        nbformat.v4.new_code_cell(
            "import json\njson.dump({'profile': profile, 'force_retrain': force_retrain, "
            "'overrides': overrides}, open(out, 'w'))"
        ),
    ]
    path = folder / "params.ipynb"
    nbformat.write(nb, path)
    return path


def _papermill(notebook, tmp_path, *args):
    out = tmp_path / "got.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(notebook),
            str(tmp_path / "executed.ipynb"),
            "-r",
            "out",
            str(out),
            *args,
            "--kernel",
            "python3",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_papermill_strings_are_converted(notebook, tmp_path):
    proc, got = _papermill(
        notebook,
        tmp_path,
        "-r",
        "force_retrain",
        "false",
        "-p",
        "overrides",
        '{"resample_every": 7}',
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert got == {"profile": "smoke", "force_retrain": False, "overrides": {"resample_every": 7}}


@pytest.mark.parametrize(
    "args, message",
    [
        (("-p", "force_retrain", "no"), "force_retrain='no' is not a boolean: pass True or False"),
        (("-p", "overrides", "5"), "overrides=5 must be a dict"),
    ],
)
def test_papermill_bad_values_stop_before_work(notebook, tmp_path, args, message):
    proc, got = _papermill(notebook, tmp_path, *args)
    assert proc.returncode != 0 and got is None  # the cell after the check never ran
    assert "ParameterError" in proc.stderr and message in proc.stderr


def test_every_notebook_parameter_has_a_check():
    """A parameter a notebook declares but CHECKS lacks fails only when papermill runs it."""
    from hsae_utils.config import REPO_ROOT
    from hsae_utils.pipeline.params import CHECKS
    from hsae_utils.pipeline.stages import declared_parameters

    for nb in sorted((REPO_ROOT / "notebooks").glob("[0-9]*.ipynb")):
        missing = declared_parameters(nb) - set(CHECKS)
        assert not missing, f"{nb.name}: no check for {sorted(missing)}"
