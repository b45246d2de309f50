"""The field's SAE trainers as timed training steps next to ours (scripts/benchmark.py section 2,
tests/test_peers.py): dictionary_learning, SAELens (pinned in the lock) and EleutherAI's sparsify
(requirements-bench.txt, installed --no-deps).

`peer_step(peer, arch, ours, x, dead)` copies our SAE's initial weights into the peer's SAE, with
our learning rate, k and L1 coefficient, and returns a `PeerStep`: the peer's full training step
(forward, backward, its decoder constraint, Adam) on x as a callable, and the first-batch losses
of both on x. Where the peer's loss is another formula, what IS the same is compared (its
`compared`) and the difference is named (its `note`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hsae_utils.method.train import TrainConfig

PEERS = ("dictionary_learning", "sae_lens", "sparsify")
# The architectures each peer has, of ours ("topk dead": TopK with 10 % of latents dead, AuxK on).
PEER_ARCHS = {
    "dictionary_learning": ("relu", "topk", "topk dead", "batchtopk"),
    "sae_lens": ("relu", "topk", "topk dead", "batchtopk"),
    "sparsify": ("topk", "topk dead"),
}
PEER_LABELS = {
    "dictionary_learning": "dictionary_learning",
    "sae_lens": "SAELens",
    "sparsify": "sparsify",
}
DEAD_FRAC = 0.1  # latents made dead where AuxK or resampling is timed
TOTAL_STEPS = 10_000  # schedule length the timed steps see (it only sets lambda_t)
NEVER = 10**12  # a "not fired for" count past every peer's dead criterion


@dataclass
class PeerStep:
    step: Callable[[], None]  # one full training step of the peer on x
    ours: float  # first-batch value of what is compared, ours
    theirs: float  # the same, the peer's
    compared: str  # "loss", or what is compared where the losses differ
    model: torch.nn.Module  # the peer's SAE (its step trains it)
    note: str = ""  # how the peer's loss differs from ours ("" if it is the same formula)


def _register_without_init(name: str) -> bool:
    """Make `name` importable without running its package __init__ (which imports optional
    dependencies installed --no-deps leaves out); False when the package is not installed."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    sys.modules.setdefault(name, importlib.util.module_from_spec(spec))
    return True


def available(peer: str) -> str | None:
    """The installed version of `peer`, or None when it is not installed."""
    dist = {
        "dictionary_learning": "dictionary-learning",
        "sae_lens": "sae-lens",
        "sparsify": "eai-sparsify",
    }[peer]
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def peer_step(peer: str, arch: str, ours, x_BD: Tensor, dead: bool = False) -> PeerStep:
    """The peer's training step for `arch` with our SAE's initial weights (call it before ours
    trains). `dead`: the first DEAD_FRAC of latents count as dead for the peer's AuxK (our SAE
    must have them dead too: scripts/benchmark.py kill_latents / force_dead)."""
    if available(peer) is None:
        raise ModuleNotFoundError(
            f"{peer} is not installed: .venv/bin/pip install --no-deps -r requirements-bench.txt"
        )
    return {
        "dictionary_learning": _dictionary_learning,
        "sae_lens": _sae_lens,
        "sparsify": _sparsify,
    }[peer](arch, ours, x_BD, dead)


def _our_loss(ours, x_BD: Tensor):
    with torch.no_grad():
        return ours.loss(x_BD, 1, TOTAL_STEPS)


# ------------------------------------------------------------------------- dictionary_learning
def _dictionary_learning(arch: str, ours, x_BD: Tensor, dead: bool) -> PeerStep:
    """`trainer.update`. Their lr and sparsity warm-ups are off (they only scale numbers); step 1
    skips their step-0 geometric-median init of b_dec."""
    _register_without_init("dictionary_learning")  # its __init__ imports nnsight
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer

    cfg = ours.cfg
    kw = dict(
        steps=10**6,
        activation_dim=cfg.d_in,
        dict_size=cfg.d_sae,
        layer=0,
        lm_name="benchmark",
        device=str(x_BD.device),
        lr=TrainConfig().lr,
        warmup_steps=0,
    )
    if arch == "relu":
        trainer = StandardTrainer(**kw, l1_penalty=cfg.l1_coefficient, sparsity_warmup_steps=None)
        pre_bias = trainer.ae.bias  # subtracted before the encoder, added after the decoder
    else:
        cls = TopKTrainer if arch.startswith("topk") else BatchTopKTrainer
        trainer = cls(**kw, k=cfg.k)
        pre_bias = trainer.ae.b_dec
    with torch.no_grad():  # nn.Linear stores weights as [out, in]
        trainer.ae.encoder.weight.copy_(ours.W_enc.T)
        trainer.ae.encoder.bias.copy_(ours.b_enc)
        trainer.ae.decoder.weight.copy_(ours.W_dec.T)
        pre_bias.copy_(ours.b_dec)
    n_dead = int(DEAD_FRAC * cfg.d_sae)

    def step():
        if dead:  # their criterion: not fired for 10M tokens
            trainer.num_tokens_since_fired[:n_dead] = NEVER
        trainer.update(1, x_BD)

    mine = _our_loss(ours, x_BD)
    if dead:  # compare the reconstruction term
        trainer.num_tokens_since_fired[:n_dead] = NEVER
        with torch.no_grad():
            theirs = trainer.loss(x_BD, step=1, logging=True).losses["l2_loss"]
        return PeerStep(
            step,
            float(mine.metrics["mse"]),
            theirs,
            "reconstruction MSE",
            trainer.ae,
            "AuxK: theirs adds 1/32 x normalised MSE to the plain squared error, "
            "ours 1/32 x normalised MSE x D var(x) (Gao et al.'s balance on our scale)",
        )
    with torch.no_grad():
        theirs = float(trainer.loss(x_BD, step=1))
    return PeerStep(step, float(mine.loss), theirs, "loss", trainer.ae)


# ------------------------------------------------------------------------- SAELens
def _sae_lens(arch: str, ours, x_BD: Tensor, dead: bool) -> PeerStep:
    """SAELens' own `SAETrainer.step` (forward, backward, grad-norm clip 1.0, Adam) on its
    training SAE, configured as ours: b_dec not subtracted before the encoder
    (apply_b_dec_to_input=False, our Eq. 1), no activation normalisation, no warm-ups."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    cfg, device = ours.cfg, str(x_BD.device)
    common = dict(
        d_in=cfg.d_in,
        d_sae=cfg.d_sae,
        device=device,
        apply_b_dec_to_input=False,
        normalize_activations="none",
    )
    if arch == "relu":
        sae = StandardTrainingSAE(
            StandardTrainingSAEConfig(**common, l1_coefficient=cfg.l1_coefficient)
        )
    elif arch == "batchtopk":
        sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common, k=cfg.k))
    else:
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=cfg.k))
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(getattr(ours, name))
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=10**12,
            train_batch_size_samples=x_BD.shape[0],
            lr=TrainConfig().lr,
            lr_end=TrainConfig().lr,
            device=device,
        ),
        sae,
        data_provider=iter(()),
    )
    n_dead = int(DEAD_FRAC * cfg.d_sae)

    def dead_mask():
        if dead:  # their criterion: not fired for dead_feature_window steps
            trainer.n_forward_passes_since_fired[:n_dead] = NEVER
        return trainer.dead_neurons

    from sae_lens.saes.sae import TrainStepInput

    with torch.no_grad():
        out = sae.training_forward_pass(
            TrainStepInput(
                sae_in=x_BD,
                coefficients=trainer.get_coefficients(),
                dead_neuron_mask=dead_mask(),
                n_training_steps=0,
                is_logging_step=False,
            )
        )
    mine = _our_loss(ours, x_BD)
    if dead:  # compare the reconstruction term
        note = (
            "AuxK: theirs weighs the dead latents' squared error by min(n_dead / (d/2), 1) "
            "(coefficient 1), ours by Gao et al.'s 1/32 x normalised MSE x D var(x)"
        )
        cmp, values = "reconstruction MSE", (mine.metrics["mse"], out.losses["mse_loss"])
    else:
        note = (
            "L1: theirs weighs each latent by its decoder row's norm (equal at our unit-norm "
            "rows; their decoder is not renormalised after the step)"
            if arch == "relu"
            else ""
        )
        cmp, values = "loss", (mine.loss, out.loss)

    def step():
        dead_mask()
        trainer.step(x_BD)

    return PeerStep(step, float(values[0]), float(values[1]), cmp, sae, note)


# ------------------------------------------------------------------------- sparsify
def _sparsify(arch: str, ours, x_BD: Tensor, dead: bool) -> PeerStep:
    """The inner step of sparsify's `Trainer.fit` for one SAE with loss_fn="fvu" and its "adam"
    optimizer (torch.optim.Adam, our lr): decoder rows renormalised, forward, (fvu + auxk_alpha
    auxk).backward(), the decoder gradient's parallel part removed, Adam step, dead counts.
    auxk_alpha = 1/32 (Gao et al.; sparsify's default is 0) where latents are dead."""
    if arch not in PEER_ARCHS["sparsify"]:
        raise ValueError(f"sparsify has no {arch!r} SAE")
    _register_without_init("sparsify")  # its __init__ imports the trainer (schedulefree)
    with contextlib.redirect_stdout(io.StringIO()):  # "Triton not installed, using eager ..."
        from sparsify.config import SparseCoderConfig
        from sparsify.sparse_coder import SparseCoder

    cfg = ours.cfg
    sae = SparseCoder(
        cfg.d_in, SparseCoderConfig(num_latents=cfg.d_sae, k=cfg.k), device=x_BD.device
    )
    with torch.no_grad():  # encoder: nn.Linear [out, in]; W_dec [F, D] as ours
        sae.encoder.weight.copy_(ours.W_enc.T)
        sae.encoder.bias.copy_(ours.b_enc)
        sae.W_dec.copy_(ours.W_dec)
        sae.b_dec.copy_(ours.b_dec)
    opt = torch.optim.Adam(sae.parameters(), lr=TrainConfig().lr)
    auxk_alpha, n_dead = (1 / 32 if dead else 0.0), int(DEAD_FRAC * cfg.d_sae)
    since_fired_F = torch.zeros(cfg.d_sae, dtype=torch.long, device=x_BD.device)
    if dead:
        since_fired_F[:n_dead] = NEVER

    def step():
        sae.set_decoder_norm_to_unit_norm()
        dead_mask = since_fired_F > 10_000_000 if auxk_alpha > 0 else None
        out = sae(x_BD, dead_mask=dead_mask)
        (out.fvu + auxk_alpha * out.auxk_loss).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            did_fire_F = torch.zeros(cfg.d_sae, dtype=torch.bool, device=x_BD.device)
            did_fire_F[out.latent_indices.flatten()] = True
            since_fired_F.add_(x_BD.shape[0])
            since_fired_F[did_fire_F] = 0
            if dead:
                since_fired_F[:n_dead] = NEVER

    with torch.no_grad():
        out = sae(x_BD)
    total_var = (x_BD - x_BD.mean(0)).pow(2).sum()
    # fvu = sum ||e||^2 / sum ||x - mean x||^2; ours = sum ||e||^2 / B: compared on our scale.
    theirs = float(out.fvu * total_var / x_BD.shape[0])
    note = (
        "loss: theirs is the FVU, sum ||e||^2 / sum ||x - mean(x)||^2 (compared x total "
        "variance / B)"
    )
    if dead:
        note += (
            "; AuxK: theirs k_aux = d/2, weighed by min(n_dead / k_aux, 1) / total variance, "
            "ours Gao et al.'s normalised MSE"
        )
    return PeerStep(
        step, float(_our_loss(ours, x_BD).metrics["mse"]), theirs, "reconstruction MSE", sae, note
    )


if __name__ == "__main__":  # scripts/install_test_deps.sh: check that every peer imports and runs
    from hsae_utils.method.saes import TopKSAE, TopKSAEConfig

    for name in PEERS:
        if available(name) is None:
            raise SystemExit(
                f"{name} is not installed: .venv/bin/pip install --no-deps -r "
                "requirements-bench.txt"
            )
        peer_step(
            name, "topk", TopKSAE(TopKSAEConfig(d_in=16, d_sae=32, k=4)), torch.randn(8, 16)
        ).step()
    print("peers run:", ", ".join(f"{PEER_LABELS[p]} {available(p)}" for p in PEERS))
