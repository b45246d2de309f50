"""The notebooks run the batch sizes of the card they see (`resources.sized_for_device`), the
preflight prints those, and no cache refuses or misses when the card changes them."""

from __future__ import annotations

import dataclasses
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.io import read_json, write_json_atomic
from hsae_utils.pipeline import resources as res

from .conftest import TINY_D


@pytest.fixture
def card(monkeypatch):
    """A visible CUDA card of a chosen size: only the memory query and is_available are faked;
    records which device was asked about."""
    asked = []

    def visible(total_memory: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

        def props(device):
            asked.append(device)
            return SimpleNamespace(total_memory=total_memory, name="fake card")

        monkeypatch.setattr(torch.cuda, "get_device_properties", props)

    visible.asked = asked
    return visible


def test_cpu_profiles_are_returned_unchanged(monkeypatch):
    """On the CPU the very same profile comes back, and no card is queried."""

    def no_card(device):
        raise AssertionError("a CPU profile queried a GPU")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_card)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("local", "smoke", "paper-tiny", "colab-gemma"):  # auto -> cpu, or cpu
        P = get_profile(name)
        assert res.sized_for_device(P) is P
        assert res.sized_for_device(P, "cpu") is P
        assert res.device_batches_line(P) is None
    # an explicit device wins over the profile's, even with a card visible
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    P = get_profile("paper")
    assert res.sized_for_device(P, "cpu") is P


def test_colab_gemma_on_a_16_gb_card_runs_fit_to_cards_sizes(card):
    card(16 * 10**9)
    P = get_profile("colab-gemma")  # device "auto": resolves to the faked card
    sized = res.sized_for_device(P)
    assert sized == res.fit_to_card(P, 16 * 10**9)
    assert [str(d) for d in card.asked] == ["cuda"]  # the resolved device, not a fixed index
    # fp32 Gemma-2 (10.5 GB) leaves 2.3 GB of 80 % of the card: 4 x 16 contexts fit (their
    # workspace: 128 x (4 d + 3 d_mlp + 8 x 128) x 4 B = 19 MB each)
    assert sized.model_batch_size == 4 * P.model_batch_size == 64
    assert 1 <= sized.eval_batch_contexts <= 4 * P.eval_batch_contexts
    # nothing but the two batch sizes differs from the profile
    assert (
        dataclasses.replace(
            sized, model_batch_size=P.model_batch_size, eval_batch_contexts=P.eval_batch_contexts
        )
        == P
    )
    # an explicit index is the card asked about
    res.sized_for_device(P, "cuda:1")
    assert str(card.asked[-1]) == "cuda:1"


def test_too_small_a_card_is_refused_naming_the_fix(card):
    card(8 * 10**9)
    with pytest.raises(ValueError, match="do not fit .* use a larger GPU"):
        res.sized_for_device(get_profile("colab-gemma"))


def test_the_preflight_prints_the_sizes_the_notebooks_run(card, capsys, tmp_path, monkeypatch):
    card(16 * 10**9)
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    P = get_profile("colab-gemma")
    sized = res.sized_for_device(P)
    res.main(["check", "colab-gemma", "--no-hub"])  # may refuse the disk here; prints the line
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("Batches the notebooks run"))
    assert re.search(
        rf"model batch {sized.model_batch_size} contexts, "
        rf"splice batch {sized.eval_batch_contexts} contexts\.$",
        line,
    )
    assert "(16 GB)" in line
    # cluster jobs size themselves on their own card: no line
    res.main(["check", "colab-gemma", "--no-hub", "--jobs"])
    assert "Batches the notebooks run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    ["01_activation_caching", "08_evaluation", "11_readings", "12_features"],
)
def test_notebooks_with_a_model_forward_run_the_cards_sizes(name):
    """Every notebook whose library calls read model_batch_size / eval_batch_contexts sizes its
    profile with sized_for_device before it loads the model (so a too-small card stops first)."""
    src = (REPO_ROOT / "notebooks" / "src" / f"{name}.py").read_text()
    call = re.search(r"^P = resources\.sized_for_device\(\s*config\.get_profile\(", src, re.M)
    assert call, f"{name} does not size its profile for the card"
    assert "config.get_profile(" not in src[: call.start()] + src[call.end() :]
    load = src.find("load_model(")
    assert load == -1 or call.start() < load


def test_no_other_notebook_reads_the_batch_sizes():
    sized = {"01_activation_caching", "08_evaluation", "11_readings", "12_features"}
    for path in sorted((REPO_ROOT / "notebooks" / "src").glob("[0-9]*.py")):
        src = path.read_text()
        if path.stem not in sized:
            assert "sized_for_device" not in src
            assert not re.search(r"model_batch_size|eval_batch_contexts|evaluate_profile", src)


def test_rowmap_survives_another_model_batch(tiny_model, tmp_path, monkeypatch):
    """A cache built at model batch 2 whose rows dropped massive activations (batch-median rule),
    mapped with a profile at batch 3 (another card's size): the shards' recorded batch gives the
    exact map, and the stored map is found again whatever the profile's batch."""
    from hsae_utils.data import activations
    from hsae_utils.data.forward import layer_resid
    from hsae_utils.features.rows import row_positions

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    sizes = dict(
        model_name="tiny",
        n_layers=4,
        d_model=TINY_D,
        layer=1,
        context_size=16,
        n_train_tokens=16 * 4,
        n_valid_tokens=16 * 6,
        n_norm_tokens=32,
        shard_tokens=64,
        n_eval_contexts=4,
        massive_norm_factor=1.05,
    )
    built = get_profile("smoke", model_batch_size=2, **sizes)
    other = get_profile("smoke", model_batch_size=3, **sizes)
    words = "the cat sat on the mat and the dog ran . paris is the capital of france ,".split()
    texts = lambda: (" ".join(words[i:] + words[:i]) for i in range(10**6))  # noqa: E731
    train = activations.build_cache(built, "train", tiny_model, texts, "tiny", "c")
    norm = activations.ActivationStore(train).normalizer
    folder = activations.build_cache(
        built, "validation", tiny_model, texts, "tiny", "c", normalizer=norm
    )
    store = activations.ActivationStore(folder)
    assert store.manifest["n_massive_dropped"] > 0
    assert {s["model_batch_size"] for s in store.manifest["shards"]} == {2}

    pos = row_positions(other, tiny_model, cache_root=tmp_path / "eval_cache")
    resid = layer_resid(tiny_model, store.tokens(), built.layer)  # independent: all at once
    torch.testing.assert_close(resid[pos[:, 0], pos[:, 1]], store.read_all(), rtol=1e-4, atol=1e-4)
    # stored, and found again by a profile of yet another batch size without the model
    again = row_positions(
        get_profile("smoke", model_batch_size=5, **sizes), None, tmp_path / "eval_cache"
    )
    assert np.array_equal(again, pos)

    # A cache from before the batch was recorded falls back to the profile's batch: right at
    # the batch it was built with.
    m = read_json(folder / "manifest.json")
    for s in m["shards"]:
        del s["model_batch_size"]
    write_json_atomic(folder / "manifest.json", m)
    assert np.array_equal(row_positions(built, tiny_model), pos)
