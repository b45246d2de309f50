"""hsae_utils.experiment.readings against the parameters that take each reading: defaults and alternatives."""

from __future__ import annotations

import dataclasses

import pytest

from hsae_utils.config import Profile, get_profile
from hsae_utils.data.activations import Normalizer
from hsae_utils.experiment.readings import READINGS, reading, variants
from hsae_utils.method.saes.hierarchical import HierarchicalSAEConfig
from hsae_utils.method.train import TrainConfig

TARGET = {
    "train": TrainConfig,
    "sae": HierarchicalSAEConfig,
    "store": Normalizer,
    "profile": Profile,
}


@pytest.mark.parametrize("r", READINGS, ids=lambda r: r.name)
def test_defaults_are_the_codes_and_alternatives_are_accepted(r):
    cls = TARGET[r.where]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert r.field in fields, f"{cls.__name__} has no field {r.field}"
    assert fields[r.field].default == r.default
    for alt in r.alternatives:
        assert alt != r.default
        if r.where == "train":
            assert getattr(TrainConfig(**{r.field: alt}), r.field) == alt
        elif r.where == "sae":
            cfg = HierarchicalSAEConfig(d_in=8, d_sae=16, **{r.field: alt})
            assert getattr(cfg, r.field) == alt
        elif r.where == "profile":
            assert getattr(get_profile("local", **{r.field: alt}), r.field) == alt
        else:
            assert getattr(Normalizer(scale=1.0, mean_D=(0.0,), **{r.field: alt}), r.field) == alt


def test_lookup_and_variants():
    assert reading("optimizer").alternatives == ("adam_l2", "none")
    assert ("merge_similarity", "merge_similarity", "both") in variants("sae")
    assert all(w == "train" for w in {reading(n).where for n, _, _ in variants("train")})
    with pytest.raises(ValueError, match="valid"):
        reading("nope")
