"""SAEs in SAELens' format, evaluated next to ours (notebook 08's `external_saes` parameter).

An external SAE is named by a spec string:
- a folder in SAELens' layout (`cfg.json` + `sae_weights.safetensors`): one of our exports, or a
  public SAE downloaded beforehand;
- `release:sae_id` from SAELens' directory of pretrained SAEs, downloaded from the Hugging Face hub
  on first use, e.g. `gemma-scope-2b-pt-res-canonical:layer_19/width_16k/canonical` (the paper's
  model and hook, `paper` / `colab-gemma` profiles).

`sae_lens.SAE` loads it, so every architecture SAELens reads works (standard / ReLU, TopK,
JumpReLU as in Gemma Scope, ...) with its own input handling (`apply_b_dec_to_input`, activation
normalization). A SAELens SAE acts on raw activations; `NormalizedSpaceSAE` shows it in the
normalized space of our activation cache (x_norm = x * scale), where our SAEs live, so the evaluation
treats both alike and every metric, `mse_norm` (normalized space) included, is comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from hsae_utils.config import Profile
from hsae_utils.data.activations import Normalizer
from hsae_utils.data.hub import hub_error
from hsae_utils.evals.adapter import SAEAdapter
from hsae_utils.method.checkpoint import SAE_LENS_CFG


@dataclass(frozen=True)
class ExternalSpec:
    """A parsed spec: a SAELens folder, or a release and SAE id of SAELens' directory."""

    text: str
    folder: Path | None = None
    release: str | None = None
    sae_id: str | None = None

    @property
    def name(self) -> str:
        """A short name for tables: the last two folder parts, or `release/sae_id`."""
        if self.folder is not None:
            return "/".join(self.folder.parts[-2:])
        return f"{self.release}/{self.sae_id}"


def parse_spec(text: str) -> ExternalSpec:
    """A folder if `text` is one (it must hold cfg.json), else `release:sae_id`."""
    text = text.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / SAE_LENS_CFG).is_file():
            raise FileNotFoundError(f"{path} has no {SAE_LENS_CFG}: not a SAE in SAELens' layout.")
        return ExternalSpec(text, folder=path.resolve())
    release, sep, sae_id = text.partition(":")
    if not sep or not release or not sae_id:
        raise FileNotFoundError(
            f"External SAE {text!r} is neither a folder nor `release:sae_id` (e.g. "
            "gemma-scope-2b-pt-res-canonical:layer_19/width_16k/canonical)."
        )
    return ExternalSpec(text, release=release, sae_id=sae_id)


def parse_specs(specs: str | Iterable[str] | None) -> list[ExternalSpec]:
    """Comma-separated specs (or a list of them); empty entries are skipped, duplicates dropped."""
    if specs is None:
        return []
    items = specs.split(",") if isinstance(specs, str) else list(specs)
    parsed = [parse_spec(s) for s in items if str(s).strip()]
    unique = {s.folder or (s.release, s.sae_id): s for s in parsed}
    return list(unique.values())


# ----------------------------------------------------------------------------- loading


def cfg_d_in(cfg: Mapping[str, Any]) -> int:
    return int(cfg["d_in"])


def cfg_hook_name(cfg: Mapping[str, Any]) -> str | None:
    """SAELens 6 keeps the hook in `metadata`; older configs at the top level."""
    return (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")


def check_compatible(d_in: int, hook_name: str | None, profile: Profile, spec: str) -> None:
    """The SAE must read the profile's hook with the model's width (a missing hook name in the
    config is accepted: some converted releases omit it)."""
    problems = []
    if d_in != profile.d_model:
        problems.append(f"d_in {d_in} but {profile.model_name} has d_model {profile.d_model}")
    if hook_name is not None and hook_name != profile.hook_name:
        problems.append(
            f"hook {hook_name!r} but profile {profile.name!r} reads {profile.hook_name!r}"
        )
    if problems:
        raise ValueError(
            f"External SAE {spec!r} does not fit profile {profile.name!r}: "
            + "; ".join(problems)
            + "."
        )


def load_sae_lens(spec: str | ExternalSpec, device: str | torch.device = "cpu"):
    """The `sae_lens.SAE` of a spec, on `device`, in eval mode."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    try:
        from sae_lens import SAE  # optional dependency (sae-lens)
    except ImportError as err:
        raise ImportError(
            "Evaluating SAELens-format SAEs needs the `sae-lens` package (pinned in "
            "requirements.lock; ./scripts/setup.sh installs it)."
        ) from err
    if spec.folder is not None:
        sae = SAE.load_from_disk(spec.folder, device=str(device))
    else:
        try:
            sae = SAE.from_pretrained(spec.release, spec.sae_id, device=str(device))
        except (OSError, ValueError, ConnectionError) as err:
            raise hub_error(
                f"the SAELens SAE {spec.text!r}",
                err,
                "A `release:sae_id` spec is downloaded from the hub.",
                offline="download the SAE folder elsewhere and pass the folder instead",
            ) from err
    return sae.eval()


class NormalizedSpaceSAE(torch.nn.Module):
    """A SAELens SAE (on raw activations x) as an SAE on x_norm = normalizer(x):
    encode(x_norm) = sae.encode(x), decode(z) = normalizer(sae.decode(z)). Inputs are cast to the
    SAE's dtype, latents returned dense and in float32."""

    def __init__(self, sae, normalization: Mapping[str, Any] | None = None):
        super().__init__()
        self.sae = sae
        norm = dict(normalization or {})
        self.normalization = {
            "scale": float(norm.get("scale", 1.0) or 1.0),
            "center": bool(norm.get("center", False)),
            "mean": norm.get("mean"),
        }
        self.normalizer = Normalizer(
            scale=self.normalization["scale"],
            mean_D=tuple(norm.get("mean") or ()),
            center=self.normalization["center"],
        )

    @property
    def W_dec(self) -> Tensor:
        return self.sae.W_dec

    @property
    def dtype(self) -> torch.dtype:
        return self.sae.W_dec.dtype

    def encode(self, x_norm: Tensor) -> Tensor:
        z = self.sae.encode(self.normalizer.inverse(x_norm.float()).to(self.dtype))
        return (z.to_dense() if z.is_sparse else z).float()

    def decode(self, z: Tensor) -> Tensor:
        return self.normalizer(self.sae.decode(z.to(self.dtype)).float())


def load_external_adapter(
    spec: str,
    device: str | torch.device = "cpu",
    profile: Profile | None = None,
    normalization: Mapping[str, Any] | None = None,
) -> SAEAdapter:
    """An `SAEAdapter` for an external SAE, in the normalized space `normalization`
    (the activation cache's; None = raw space). Checked against `profile` when given."""
    sae = load_sae_lens(spec, device)
    if profile is not None:
        check_compatible(
            int(sae.cfg.d_in), getattr(sae.cfg.metadata, "hook_name", None), profile, spec
        )
    view = NormalizedSpaceSAE(sae, normalization)
    return SAEAdapter(view, view.normalization)
