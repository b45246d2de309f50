"""Validation of the notebooks' papermill parameters, called by the cell after each parameters cell:

    profile, force_retrain, overrides = check_parameters(
        profile=profile, force_retrain=force_retrain, overrides=overrides, run="stage2_resampling")

It returns the values in the order given, converted (papermill passes strings more often than
users think: `-r force_retrain false`, `-p overrides '{"k": 8}'`), or raises ParameterError with
the fix, before any work. Booleans accept True/False, "true"/"false" in any case and 1/0; anything
else ("no", "yes", "2") is refused rather than guessed, since a wrong guess retrains or rebuilds.
"""

from __future__ import annotations

import ast
from typing import Any, Callable

TRUE_SPELLINGS = ("true", "1")
FALSE_SPELLINGS = ("false", "0")


class ParameterError(ValueError):
    """A notebook parameter of the wrong type or value; the message names the fix."""


def _bool(name: str, value: Any, **_: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_SPELLINGS + FALSE_SPELLINGS:
        return value.strip().lower() in TRUE_SPELLINGS
    raise ParameterError(
        f"{name}={value!r} is not a boolean: pass True or False (papermill: -p {name} True)."
    )


def _profile(name: str, value: Any, **_: Any) -> str:
    from hsae_utils.config import get_profile

    if not isinstance(value, str):
        raise ParameterError(
            f"{name}={value!r} must be a profile name (papermill: -p {name} smoke)."
        )
    try:
        get_profile(value)
    except ValueError as err:  # its message lists the valid profiles
        raise ParameterError(str(err)) from None
    return value


def _text(name: str, value: Any, **_: Any) -> str:
    if not isinstance(value, str):
        raise ParameterError(f"{name}={value!r} must be a string (papermill: -r {name} VALUE).")
    return value


def _natural(name: str, value: Any, **_: Any) -> int:
    """A non-negative integer (a seed, a count); "3" from papermill's -r is accepted."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParameterError(
            f"{name}={value!r} must be a non-negative integer (papermill: -p {name} 3)."
        )
    return value


def _metrics(name: str, value: Any, **_: Any) -> str:
    from hsae_utils.evals import FAMILIES  # torch: loaded only to check notebook 08's metrics

    families = [m.strip() for m in _text(name, value).split(",") if m.strip()]
    unknown = [m for m in families if m not in FAMILIES]
    if unknown or not families:
        raise ParameterError(
            f"{name}={value!r}: unknown or no metric families {unknown}; pass a "
            f"comma-separated subset of {','.join(FAMILIES)}."
        )
    return ",".join(families)


def _overrides(
    name: str, value: Any, run: str | None = None, profile: str | None = None, **_: Any
) -> dict:
    """A dict of the run's SAE config fields; a string is read as a Python/JSON literal. The keys
    and values are checked by building the run's config, as training will."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value) if value.strip() else {}
        except (ValueError, SyntaxError):
            raise ParameterError(
                f"{name}={value!r} is not a dict literal: pass e.g. "
                f"-p {name} '{{\"resample_every\": 200}}'."
            ) from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ParameterError(
            f"{name}={value!r} must be a dict of config fields, e.g. "
            f"{{\"resample_every\": 200}} (papermill: -y '{name}: {{...}}')."
        )
    if run is not None and value:
        from hsae_utils.config import get_profile
        from hsae_utils.method.saes import config_from_profile
        from hsae_utils.runs import get_run

        spec = get_run(run)
        try:  # unknown fields, a k larger than d_sae, ...: the config's own checks
            config_from_profile(
                spec.arch, get_profile(profile or "smoke"), **{**spec.overrides, **value}
            )
        except (ValueError, TypeError) as err:
            raise ParameterError(f"{name}={value!r} for run {run!r}: {err}") from None
    return value


CHECKS: dict[str, Callable[..., Any]] = {
    "profile": _profile,
    "rebuild_cache": _bool,
    "force_retrain": _bool,
    "skip_unavailable_probing": _bool,
    "include_width": _bool,
    "overrides": _overrides,
    "metrics": _metrics,
    "external_saes": _text,
    "seed": _natural,  # notebook 12
    "n_contexts": _natural,
    "autointerp_latents": _natural,
}


def check_parameters(*, run: str | None = None, **params: Any) -> tuple:
    """The given notebook parameters checked and converted, in the order given. `run`: the
    training run whose config `overrides` changes (notebooks 03-07)."""
    unknown = sorted(set(params) - set(CHECKS))
    if unknown:
        raise ParameterError(
            f"No check for parameter(s) {unknown}; known: {', '.join(CHECKS)}. "
            "Add one to hsae_utils.pipeline.params.CHECKS."
        )
    profile = params.get("profile")
    profile = _profile("profile", profile) if profile is not None else None
    return tuple(
        CHECKS[name](name, value, run=run, profile=profile) for name, value in params.items()
    )
