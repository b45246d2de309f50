"""The synthetic world: activations x = sum_i a_i f_i + b from `sae_lens.synthetic`, with the
features f_i, their activations a_i and the parent / child hierarchy known exactly.

Defaults follow the SynthSAEBench setting at CPU scale: more features than dimensions
(superposition), Zipfian firing probabilities, parents whose children only fire with them and are
mutually exclusive, firing probabilities compensated so children keep their nominal rates.
The world is drawn once per profile (`world_seed`); the SAE seeds vary the SAE's initialisation,
batch order and mechanisms, as on real activations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator

import torch
from torch import Tensor

from hsae_utils.data.activations import Normalizer


@dataclass(frozen=True)
class GroundTruthSetup:
    """Sizes of the synthetic experiment; training length and windows come from the profile.

    num_features > hidden_dim puts the features in superposition; d_sae = num_features gives each
    true feature room for one latent, so absorption is a choice of the SAE, not a lack of width.
    """

    num_features: int = 256
    hidden_dim: int = 64
    d_sae: int = 256
    n_parents: int = 16
    children: tuple[int, int] = (2, 4)  # children per parent, drawn in this range
    zipf_exponent: float = 0.5
    max_prob: float = 0.3
    min_prob: float = 0.01
    magnitude_std: float = 0.15  # std of each feature's firing magnitude (mean 1)
    n_train_tokens: int = 131_072
    n_eval_tokens: int = 16_384
    world_seed: int = 0
    # None: the profile's train_steps / train_batch_size (windows and intervals always are)
    train_steps: int | None = None
    train_batch_size: int | None = None

    def __post_init__(self):
        if self.num_features <= self.hidden_dim:
            raise ValueError(
                f"GroundTruthSetup: num_features ({self.num_features}) must exceed "
                f"hidden_dim ({self.hidden_dim}) for superposition."
            )
        if self.n_parents * (1 + self.children[1]) > self.num_features:
            raise ValueError(
                "GroundTruthSetup: the hierarchy needs n_parents x (1 + max children)"
                " <= num_features; lower n_parents or raise num_features."
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# `local`: 27 runs (9 configurations x 3 seeds) of the profile's 500 steps at batch 1,024,
# d = 32, F = 128 in about 3 minutes on 2 cores; `smoke`: seconds. GPU profiles: a larger world.
SETUPS = {
    "smoke": GroundTruthSetup(
        num_features=48,
        hidden_dim=16,
        d_sae=48,
        n_parents=4,
        n_train_tokens=4096,
        n_eval_tokens=2048,
    ),
    "local": GroundTruthSetup(
        num_features=128,
        hidden_dim=32,
        d_sae=128,
        n_parents=12,
        n_train_tokens=65_536,
        n_eval_tokens=16_384,
        train_batch_size=1024,
    ),
}
GPU_SETUP = GroundTruthSetup(
    num_features=1024,
    hidden_dim=256,
    d_sae=1024,
    n_parents=64,
    n_train_tokens=524_288,
    n_eval_tokens=32_768,
)


_CHUNK = 65_536


def setup_for_profile(profile) -> GroundTruthSetup:
    return SETUPS.get(profile.name, GPU_SETUP)


@dataclass
class SyntheticWorld:
    """One drawn world: the library's SyntheticModel, normalized train / eval activations and
    the eval tokens' true feature activations."""

    setup: GroundTruthSetup
    model: object  # sae_lens.synthetic.SyntheticModel
    normalizer: Normalizer
    train_x_ND: Tensor  # normalized, as the SAEs see them
    eval_x_ND: Tensor  # normalized
    eval_feats_NF: Tensor  # true feature activations of the eval tokens (>= 0)

    @property
    def feature_vectors_FD(self) -> Tensor:
        return self.model.feature_dict.feature_vectors.detach()

    @property
    def hierarchy(self):
        return self.model.hierarchy

    def __getstate__(self) -> dict:
        """Pickled (for `experiment.run_tasks`' worker processes) with the library's model
        reduced to what the experiment reads of it, the feature vectors and the hierarchy's
        tree: the model holds closures, which do not pickle."""
        state = dict(self.__dict__)
        state["model"] = _frozen_model(self.model)
        return state


def _frozen_node(node) -> SimpleNamespace:
    return SimpleNamespace(
        feature_index=node.feature_index,
        mutually_exclusive_children=node.mutually_exclusive_children,
        children=[_frozen_node(c) for c in node.children],
    )


def _frozen_model(model) -> SimpleNamespace:
    """The feature vectors and the hierarchy's nodes (index, exclusive children) of a
    SyntheticModel, in plain picklable objects, read through the same attributes."""
    if isinstance(model, SimpleNamespace):  # frozen already
        return model
    hierarchy = model.hierarchy
    return SimpleNamespace(
        feature_dict=SimpleNamespace(feature_vectors=model.feature_dict.feature_vectors.detach()),
        hierarchy=None
        if hierarchy is None
        else SimpleNamespace(roots=[_frozen_node(r) for r in hierarchy.roots]),
    )


def build_world(setup: GroundTruthSetup) -> SyntheticWorld:
    """Draw the synthetic model and its samples (deterministic in `setup.world_seed`), and
    normalize as the real cache does (one scalar, E||x||^2 = d, fitted on the first 10k tokens)."""
    from sae_lens.synthetic import (
        HierarchyConfig,
        SyntheticModel,
        SyntheticModelConfig,
        ZipfianFiringProbabilityConfig,
    )
    from sae_lens.util import temporary_seed

    cfg = SyntheticModelConfig(
        num_features=setup.num_features,
        hidden_dim=setup.hidden_dim,
        firing_probability=ZipfianFiringProbabilityConfig(
            exponent=setup.zipf_exponent, max_prob=setup.max_prob, min_prob=setup.min_prob
        ),
        hierarchy=HierarchyConfig(
            total_root_nodes=setup.n_parents,
            branching_factor=setup.children,
            max_depth=1,
            mutually_exclusive_portion=1.0,
            compensate_probabilities=True,
        ),
        std_firing_magnitudes=setup.magnitude_std,
        mean_firing_magnitudes=1.0,
        seed=setup.world_seed,
    )
    model = SyntheticModel(cfg)
    with temporary_seed(setup.world_seed + 1000):  # the library samples from torch's global RNG
        # in chunks: the feature activations of the training tokens are not kept
        train_x = torch.cat(
            [
                model.sample(min(_CHUNK, setup.n_train_tokens - i))
                for i in range(0, setup.n_train_tokens, _CHUNK)
            ]
        )
        eval_x, eval_feats = model.sample_with_features(setup.n_eval_tokens)
    normalizer = Normalizer.fit(train_x[:10_000])
    return SyntheticWorld(
        setup,
        model,
        normalizer,
        normalizer(train_x).contiguous(),
        normalizer(eval_x).contiguous(),
        eval_feats,
    )


class TensorStore:
    """The trainer's BatchSource protocol over an in-memory tensor: shuffled epochs,
    deterministic in (seed, start_step), so a resumed run sees the same batches."""

    def __init__(self, x_ND: Tensor, normalizer: Normalizer | None = None):
        self.x_ND = x_ND
        self.n_tokens, self.d_model = x_ND.shape
        self.normalizer = normalizer  # recorded in the exported SAE's config

    def iter_batches(
        self, batch_size: int, seed: int, start_step: int = 0, device: str | torch.device = "cpu"
    ) -> Iterator[Tensor]:
        per_epoch = self.n_tokens // batch_size
        if per_epoch == 0:
            raise ValueError(
                f"batch_size {batch_size} exceeds the store's {self.n_tokens} "
                "tokens: pass a smaller batch_size or more tokens."
            )
        step, perm, perm_epoch = start_step, None, -1
        while True:
            epoch, b = divmod(step, per_epoch)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(seed * 100_003 + epoch)
                perm, perm_epoch = torch.randperm(self.n_tokens, generator=g), epoch
            yield self.x_ND[perm[b * batch_size : (b + 1) * batch_size]].to(device)
            step += 1

    def sample(self, n_tokens: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        return self.x_ND[torch.randperm(self.n_tokens, generator=g)[:n_tokens]]
