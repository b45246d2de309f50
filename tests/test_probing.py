"""Sparse probing (hsae_utils.probing): task construction, pooling, top-k probes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hsae_utils.data.forward import layer_resid
from hsae_utils.evals import probing as pr
from hsae_utils.evals import probing_tasks
from hsae_utils.evals.adapter import SAEAdapter

from .conftest import TINY_D


class DimSAE(torch.nn.Module):
    """Latent i = ReLU(x_i): the SAE exposes the residual's coordinates as latents."""

    def __init__(self, d):
        super().__init__()
        self.W_dec = torch.nn.Parameter(torch.eye(d))
        self.cfg = SimpleNamespace(normalization={"scale": 1.0, "center": False, "mean": None})

    def encode(self, x):
        return torch.relu(x)

    def decode(self, z):
        return z


def synthetic_probing_data(n_per_class=40, n_classes=3, d=16, tokens_per_text=5, seed=0):
    """Texts of class c carry a planted feature on dimension 3 + c on every token."""
    rng = np.random.default_rng(seed)
    acts, task, split, label = [], [], [], []
    for s in (0, 1):
        for c in range(n_classes):
            for _ in range(n_per_class):
                a = rng.normal(size=(tokens_per_text, d)).astype(np.float32)
                a[:, 3 + c] += 3.0
                acts.append(a)
                task.append(0)
                split.append(s)
                label.append(c)
    offsets = np.r_[0, np.cumsum([len(a) for a in acts])]
    return pr.ProbingData(
        ["toy"],
        {"toy": [f"class{c}" for c in range(n_classes)]},
        torch.from_numpy(np.concatenate(acts)),
        torch.from_numpy(offsets),
        np.array(task),
        np.array(split),
        np.array(label),
        seed=0,
    )


def test_planted_feature_is_found_by_top1_probing():
    data = synthetic_probing_data()
    summary, rows = pr.evaluate_sparse_probing(SAEAdapter(DimSAE(16)), data, k_values=(1, 5))
    assert summary["sae_top_1_test_accuracy"] == pytest.approx(1.0)
    assert rows[0]["dataset"] == "toy"
    # the top-1 latent of each class is its planted dimension
    features = pr.sae_features(SAEAdapter(DimSAE(16)), data)
    for _task, cls, sets in data.tasks():
        idx, y = sets["train"]
        c = int(cls[-1])
        assert pr.top_k_mean_diff(features[idx], y, 1)[0] == 3 + c


def test_binary_tasks_are_balanced_and_use_every_other_class():
    labels = np.repeat(np.arange(4), [30, 10, 10, 10])
    rng = np.random.default_rng(0)
    idx, y = pr.binary_task(labels, 0, 4, rng)
    assert y.sum() == 30 and (y == 0).sum() == 30
    assert set(labels[idx[y == 0]]) == {1, 2, 3}
    idx, y = pr.binary_task(labels, 1, 4, rng)
    assert y.sum() == 10 and (y == 0).sum() == 10 and 1 not in set(labels[idx[y == 0]])


def test_the_same_negatives_for_the_llm_and_every_sae():
    """An SAE whose latents are the residual coordinates must score exactly the LLM's top-k
    accuracies: only possible if both are probed on the same positives, negatives and splits."""
    data = synthetic_probing_data(n_per_class=30, tokens_per_text=2)
    for i in range(len(data.offsets) - 1):  # weaken the planted feature: accuracies below 1
        data.acts_TD[data.offsets[i] : data.offsets[i + 1], 3:6] *= 0.15
    llm = pr.mean_pool(data.acts_TD, data.offsets).numpy()
    data.llm_results = pr.probe_features(llm, data, (1, 5), "llm")
    identity = DimSAE(16)
    identity.encode = lambda x: x
    _, rows = pr.evaluate_sparse_probing(SAEAdapter(identity), data, k_values=(1, 5))
    for k in (1, 5):
        assert rows[0][f"sae_top_{k}_test_accuracy"] == rows[0][f"llm_top_{k}_test_accuracy"]
    assert 0.5 < rows[0]["llm_top_1_test_accuracy"] < 1.0
    # a different draw of negatives would change them (the test can fail)
    other = pr.probe_features(llm, pr.ProbingData(**{**data.__dict__, "seed": 1}), (1, 5), "llm")
    assert other["toy"] != data.llm_results["toy"]


def test_mean_pool_in_chunks_and_from_fp16_arrays():
    acts = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    expected = torch.tensor([[1.0, 2.0], [0.0, 0.0], [7.0, 8.0]])
    offsets = torch.tensor([0, 2, 2, 6])
    torch.testing.assert_close(pr.mean_pool(acts, offsets), expected)
    torch.testing.assert_close(
        pr.mean_pool(acts.numpy().astype(np.float16), offsets, batch=4), expected
    )
    doubled = pr.mean_pool(acts, offsets, encode=lambda rows: 2 * rows, batch=3)
    torch.testing.assert_close(doubled, 2 * expected)
    # rows marked as massive activations are left out of the mean
    keep = np.array([True, True, True, False, True, False])
    torch.testing.assert_close(
        pr.mean_pool(acts, offsets, row_keep=keep),
        torch.tensor([[1.0, 2.0], [0.0, 0.0], [6.0, 7.0]]),
    )


def toy_probing_setup():
    """A smoke profile on the tiny model and one two-class toy probing task."""
    from hsae_utils.config import get_profile

    P = get_profile(
        "smoke",
        model_name="tiny",
        n_layers=4,
        d_model=TINY_D,
        layer=1,
        probe_max_tokens=8,
        probe_k_values=(1, 2),
    )
    words = "the cat sat on the mat and the dog ran".split()
    texts = [" ".join(words[i:] + words[:i]) for i in range(10)]
    tasks = {
        "toy": probing_tasks.ProbingTask(
            "toy",
            ["a", "b"],
            [(t, "ab"[i % 2]) for i, t in enumerate(texts[:8])],
            [(t, "ab"[i % 2]) for i, t in enumerate(texts[8:] * 2)],
        )
    }
    return P, tasks


def test_probing_cache_streams_to_disk_and_is_reused(tiny_model, tmp_path):
    P, tasks = toy_probing_setup()
    a = pr.build_probing_data(
        tiny_model, P, cache_root=tmp_path, fingerprint="tiny", progress=False, tasks=tasks
    )
    assert not a.reused and isinstance(a.acts_TD, np.ndarray)
    assert not list(a.folder.glob(".*partial"))
    b = pr.build_probing_data(
        tiny_model, P, cache_root=tmp_path, fingerprint="tiny", progress=False, tasks=tasks
    )
    assert b.reused and b.llm_results == a.llm_results
    np.testing.assert_array_equal(np.asarray(a.acts_TD), np.asarray(b.acts_TD))
    assert set(b.llm_results["toy"]) == {
        "llm_test_accuracy",
        "llm_top_1_test_accuracy",
        "llm_top_2_test_accuracy",
    }


def test_token_activations_mask_special_tokens_and_ignore_padding(tiny_model):
    lists = [[0, 5, 6, 7], [0, 9, 0, 10, 11, 12, 13], [0, 20]]  # a boundary token inside text 2
    acts, offsets, row_keep = pr.token_activations(
        tiny_model, lists, 1, special_ids=[0, 1], pad_id=0, progress=False
    )
    assert row_keep.all()  # no massive-activation rule here
    assert offsets.tolist() == [0, 3, 8, 9]
    for i, ids in enumerate(lists):
        ref = layer_resid(tiny_model, torch.tensor([ids]), 1)[0]
        keep = torch.tensor([t not in (0, 1) for t in ids])
        torch.testing.assert_close(
            torch.from_numpy(acts[offsets[i] : offsets[i + 1]]), ref[keep], rtol=1e-4, atol=1e-5
        )
    assert acts.shape[1] == TINY_D
    # the massive-activation rule marks rows far above the batch median norm (here: all of them)
    _, _, row_keep = pr.token_activations(
        tiny_model, lists, 1, special_ids=[0, 1], pad_id=0, progress=False, massive_factor=1e-3
    )
    assert not row_keep.any()


def test_tokenize_truncates_and_starts_with_bos(tiny_model):
    ids = pr.tokenize(["the cat sat on the mat", "dog"], tiny_model.tokenizer, 4, bos=0)
    assert [len(i) for i in ids] == [4, 2] and all(i[0] == 0 for i in ids)


def test_split_per_class():
    ex = [(f"t{i}", "a" if i % 3 else "b") for i in range(60)]
    task = probing_tasks.split_per_class(ex, n_train=10, n_test=5, seed=0, name="x")
    assert task.classes == ["a", "b"]
    assert sum(lbl == "a" for _, lbl in task.train) == 10
    assert sum(lbl == "b" for _, lbl in task.test) == 5
    assert not {t for t, _ in task.train} & {t for t, _ in task.test}


def test_paper_datasets_fail_with_a_clear_hub_message(monkeypatch):
    """The real `datasets.load_dataset` in offline mode (what an unreachable hub raises, without
    waiting for network timeouts), not a stand-in: the message must name the hub and the fix."""
    import datasets
    import huggingface_hub.constants

    from hsae_utils.config import get_profile

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="Hugging Face hub is in offline mode") as err:
        probing_tasks.load_tasks(get_profile("paper"))
    message = str(err.value)
    assert "'LabHC/bias_in_bios_class_set1' is unavailable" in message
    assert "hf download LabHC/bias_in_bios --repo-type dataset" in message
    assert "skip_unavailable_probing" in message and err.value.kind == "offline"
