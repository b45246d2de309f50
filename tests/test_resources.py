"""The resource plan against real files, and the preflight's refusals (hsae_utils.pipeline.resources)."""

import shutil

import pytest
import torch

from hsae_utils.config import REPO_ROOT, get_profile
from hsae_utils.pipeline import resources as res


@pytest.fixture(scope="module")
def smoke_model():
    from hsae_utils.data.model import load_model

    return load_model(get_profile("smoke"))


@pytest.mark.parametrize("cache_dtype", ["float32", "bfloat16"])
def test_cache_bytes_match_a_real_smoke_cache(tmp_path, monkeypatch, smoke_model, cache_dtype):
    from hsae_utils.data.activations import cache_activations

    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    (tmp_path / "corpus").symlink_to(REPO_ROOT / "outputs" / "corpus")  # the built corpus
    # smoke with fewer tokens (seconds of SmolLM2 on CPU); 2 contexts per shard: 6 shards
    profile = get_profile(
        "smoke",
        cache_dtype=cache_dtype,
        n_train_tokens=1024,
        n_valid_tokens=512,
        n_norm_tokens=256,
        shard_tokens=256,
    )
    folders = cache_activations(profile, model=smoke_model)
    for split, folder in folders.items():
        real = sum(f.stat().st_size for f in folder.iterdir())  # shards, tokens, manifest
        predicted = res.split_cache_bytes(profile, split)
        assert 0.97 * predicted <= real <= 1.01 * predicted, (split, real, predicted)
    # What the disk check of the whole run counts for caching is these two folders.
    assert res.caching_need(profile).disk == pytest.approx(
        res.folder_bytes(profile.cache_dir), rel=0.03
    )


def test_paper_plan_from_independent_arithmetic():
    paper = get_profile("paper")
    contexts = 10_000_000 // 128  # 78,125 contexts; every position but BOS, bf16
    assert res.split_cache_bytes(paper, "train") == pytest.approx(
        contexts * 127 * 2304 * 2, rel=1e-3
    )
    assert res.split_cache_bytes(paper, "train") < 47e9  # was 92 GB in fp32 with every position
    # SAEBench's 36 probing classes x 2,500 texts x 127 tokens x 2,304 in bf16.
    assert res.probing_cache_bytes(paper) == pytest.approx(36 * 2500 * 127 * 2304 * 2, rel=1e-9)
    # The store: 8 shards of 2,048 contexts x 127 rows in bf16 (~9.6 GB, was ~40-58 GB).
    assert res.training_run_need(paper).host_ram == pytest.approx(
        8 * 2048 * 127 * 2304 * 2, rel=0.01
    )
    assert paper.n_eval_contexts * paper.context_size <= paper.n_valid_tokens


def test_docs_table_is_the_code_output():
    """docs/resources.md is generated; regenerate it with the command it names."""
    text = (REPO_ROOT / "docs" / "resources.md").read_text()
    assert res.format_plan(get_profile("paper"), markdown=True) in text


def test_check_refuses_too_little_disk_and_ram(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HSAE_OUTPUT_ROOT", str(tmp_path))
    assert res.main(["check", "smoke", "--no-hub"]) == 0
    monkeypatch.setattr(res.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 1000))
    monkeypatch.setattr(res, "available_ram", lambda: 1000)
    problems = res.check(get_profile("smoke"), hub=False)
    assert any(p.startswith("disk:") and "HSAE_OUTPUT_ROOT" in p for p in problems)
    assert any(p.startswith("host RAM:") for p in problems)
    assert res.main(["check", "smoke", "--no-hub"]) == 1
    assert "Refusing to start profile smoke" in capsys.readouterr().err
    # cluster jobs (--launcher slurm) request their own RAM: the submitting machine's is not checked
    jobs = res.check(get_profile("smoke"), hub=False, here=False)
    assert any(p.startswith("disk:") for p in jobs) and not any(
        p.startswith("host RAM:") for p in jobs
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without GPU")
def test_check_refuses_a_gpu_profile_without_gpu():
    problems = res.check(get_profile("paper"), hub=False)
    assert any(p.startswith("GPU:") and "--profile local" in p for p in problems)
    jobs = res.check(get_profile("paper"), hub=False, here=False)  # the jobs get the GPU
    assert not any(p.startswith("GPU") for p in jobs)


def test_cli_usage_errors_exit_2(capsys):
    assert res.main(["plan", "no-such-profile"]) == 2
    assert "Valid profiles" in capsys.readouterr().err
    assert res.main(["frobnicate", "smoke"]) == 2
    assert res.main(["plan", "paper", "--markdown"]) == 0
    assert "| caching (notebook 01) |" in capsys.readouterr().out


def test_offline_hub_check_says_no_network_unless_cached(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repos = res.hub_repos(get_profile("paper"))
    assert ("model", "google/gemma-2-2b") in repos and ("dataset", "LabHC/bias_in_bios") in repos
    assert res.hub_repos(get_profile("local")) == []
    problem = res.hub_problem("model", "google/gemma-2-2b")
    assert "no network access" in problem and "HF_HUB_OFFLINE=1" in problem
    (tmp_path / "models--google--gemma-2-2b").mkdir()  # pre-downloaded: fine offline
    assert res.hub_problem("model", "google/gemma-2-2b") is None


def test_the_plan_is_for_the_target_card_not_the_machine_that_prints_it(monkeypatch):
    """On a CPU host (a login node, a Colab CPU runtime) a GPU profile is still planned for its
    card: colab-gemma took 37 h (CPU rates) before; the Slurm launcher asked for 0 GPUs."""
    from hsae_utils.pipeline.launcher import request

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    paper, colab_gemma = get_profile("paper"), get_profile("colab-gemma")
    h100, t4 = res.CARDS["H100"], res.CARDS["T4"]
    # Gemma-2 runs in bf16 on an H100 (bf16 tensor cores), in fp32 on a T4 (none)
    assert res.rates(paper).model_flops == pytest.approx(h100.bf16_flops * res.MODEL_EFFICIENCY)
    assert res.rates(colab_gemma).model_flops == pytest.approx(t4.fp32_flops * res.MODEL_EFFICIENCY)
    assert res.rates(get_profile("local")) is res.CPU_RATES
    assert res.rates(get_profile("paper-tiny")) is res.CPU_RATES
    assert res.totals(res.plan(colab_gemma)).seconds < 3 * 3600
    assert request(paper, 10e9, 600).gpus == 1 and request(get_profile("local"), 1e9, 60).gpus == 0
    # weights in the forward's dtype: bf16 on the H100, fp32 on the T4
    assert res.weight_bytes(paper) == 2 * res.model_size(paper).n_params
    assert res.weight_bytes(colab_gemma) == 4 * res.model_size(colab_gemma).n_params


def test_training_reads_the_cache_once_per_seed():
    """train_many: one pass over the cache per seed for all of its runs."""
    paper = get_profile("paper")
    r, n = res.rates(paper), res.n_runs(paper)
    passes = len(set(paper.seeds) | set(paper.sweep_seeds))
    read = paper.train_steps * paper.train_batch_size * paper.d_model * 2  # bf16 cache
    steps = n * paper.train_steps * 12 * paper.train_batch_size * paper.d_model * paper.dict_size
    assert res.training_need(paper).seconds == pytest.approx(
        steps / r.sae_flops + passes * read / r.read_bytes
    )
    assert passes < n


def test_the_paper_plan_states_its_time_target():
    text = res.format_plan(get_profile("paper"))
    assert "Time target: the whole run within 60 min on one NVIDIA H100" in text
    assert ("PASS" in text.splitlines()[-1]) != ("MISS" in text.splitlines()[-1])


def test_batches_follow_the_cards_memory():
    """fit_to_card on plain card sizes, against arithmetic done here: fp32 Gemma-2 weights
    (2,614,341,888 x 4 B) and a context's forward workspace 128 x (4 d + 3 d_mlp + 8 x 128) x 4 B;
    the model batch is the profile's x 4, halved until it fits 80 % of the card."""
    cards = {"8 GB": 8e9, "14 GB": 14e9, "T4": 16e9, "H100": 80e9}
    colab_gemma = get_profile("colab-gemma")
    weights = 2_614_341_888 * 4
    per_context = 128 * (4 * 2304 + 3 * 9216 + 8 * 128) * 4
    fits = int((0.8 * cards["14 GB"] - weights) // per_context)
    assert fits == 38
    sized = res.fit_to_card(colab_gemma, cards["14 GB"])
    assert sized.model_batch_size == 32  # 64 -> 32: the largest halving within 38
    assert res.fit_to_card(colab_gemma, cards["T4"]).model_batch_size == 4 * 16  # capped at 4x
    with pytest.raises(ValueError, match="use a larger GPU"):
        res.fit_to_card(colab_gemma, cards["8 GB"])
    assert res.gpu_problems(colab_gemma, cards["8 GB"])[0].startswith("GPU memory:")
    assert res.gpu_problems(colab_gemma, cards["T4"]) == []
    # larger cards never get smaller batches; paper on its H100 gets at least its own
    paper = get_profile("paper")
    small, large = res.fit_to_card(paper, 40e9), res.fit_to_card(paper, cards["H100"])
    assert large.model_batch_size >= small.model_batch_size >= 1
    assert large.eval_batch_contexts >= small.eval_batch_contexts >= 1
    assert large.model_batch_size >= paper.model_batch_size
    assert large.eval_batch_contexts >= paper.eval_batch_contexts
    # the plan is the target card's sizes; the profile itself is unchanged
    assert res.sized_for_target(paper) == large
    assert res.sized_for_target(get_profile("local")) == get_profile("local")


def test_probe_fits_count_as_device_work_on_a_gpu_profile():
    """On CUDA the probe fits run on the device (evals.logreg): the host keeps the measured
    bookkeeping only; on the CPU profiles the whole measured host time, and no device fits."""
    paper, local = get_profile("paper"), get_profile("local")
    scale = res.host_seconds_per_sae(local) / res.LOCAL_HOST_S_PER_SAE
    assert scale == pytest.approx(1.0)
    assert res.probe_fit_seconds(local) == 0
    ratio = res.host_seconds_per_sae(paper) / res.LOCAL_BOOKKEEPING_S_PER_SAE
    words = 0.4 * 256_000 + 36 * 2500  # paper: ~40 % of the vocabulary, 36 classes x 2,500 texts
    local_words = res.absorption_words(local) + res.probing_n_texts(local)
    assert ratio == pytest.approx((int(0.4 * 256_000) + 36 * 2500) / local_words)
    assert words > 100 * 1000
    assert 0 < res.probe_fit_seconds(paper) < res.host_seconds_per_sae(paper)
    assert "probe fits on the device" in res.evaluation_need(paper).note
