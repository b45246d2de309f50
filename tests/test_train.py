"""The trainer: determinism, bit-identical resume, NaN handling, logs and the exported folder."""

from __future__ import annotations

import json

import pytest
import torch

from hsae_utils.method.checkpoint import load_sae, load_training_checkpoint, restore_generator
from hsae_utils.method.saes import ARCHITECTURES, TopKSAE, TopKSAEConfig
from hsae_utils.method.train import NonFiniteLossError, TrainConfig, read_log, train

D, NF, B = 16, 48, 64


pytestmark = pytest.mark.usefixtures("one_thread")


class InMemoryStore:
    """The trainer's BatchSource protocol over a tensor: shuffled epochs, deterministic in
    (seed, start_step). Optionally raises at batch `crash_at` (an interrupted run) or returns a
    batch of inf at `poison_at` (a diverging one)."""

    def __init__(
        self,
        n_tokens: int = 1024,
        seed: int = 0,
        crash_at: int | None = None,
        poison_at: int | None = None,
    ):
        g = torch.Generator().manual_seed(seed)
        # sparse non-negative codes over a random dictionary: some structure for the SAE to find
        dict_KD = torch.randn(64, D, generator=g)
        codes_NK = torch.relu(torch.randn(n_tokens, 64, generator=g) - 1.5)
        self.data = codes_NK @ dict_KD + 0.1 * torch.randn(n_tokens, D, generator=g)
        self.d_model, self.n_tokens = D, n_tokens
        self.crash_at, self.poison_at = crash_at, poison_at

    def iter_batches(self, batch_size, seed, start_step=0, device="cpu"):
        per_epoch = self.n_tokens // batch_size
        step = start_step
        while True:
            if step == self.crash_at:
                raise KeyboardInterrupt(f"simulated crash at batch {step}")
            epoch, b = divmod(step, per_epoch)
            perm = torch.randperm(
                self.n_tokens, generator=torch.Generator().manual_seed(seed * 1000 + epoch)
            )
            x = self.data[perm[b * batch_size : (b + 1) * batch_size]]
            yield (torch.full_like(x, float("inf")) if step == self.poison_at else x).to(device)
            step += 1

    def sample(self, n_tokens, seed):
        idx = torch.randperm(self.n_tokens, generator=torch.Generator().manual_seed(seed))
        return self.data[idx[:n_tokens]]


def make(arch: str):
    cls = ARCHITECTURES[arch]
    kw = {"dead_after_tokens": 4 * B}
    if arch in ("topk", "batchtopk"):
        kw["k"] = 4
    if arch == "hierarchical":  # small intervals and loose thresholds, so mechanisms do fire
        kw.update(
            window_size=4, resample_every=4, merge_every=6, dead_rate=0.3, merge_threshold=0.5
        )
    return cls(cls.config_class(d_in=D, d_sae=NF, **kw), seed=123)  # train() re-inits from cfg.seed


def cfg(**kw) -> TrainConfig:
    return TrainConfig(
        **{"steps": 24, "batch_size": B, "log_every": 2, "checkpoint_every": 8, "seed": 7, **kw}
    )


def state(sae) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in sae.state_dict().items()}


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_same_seed_same_weights(arch, tmp_path):
    a = train(make(arch), InMemoryStore(), cfg(), tmp_path / "a", progress=False)
    b = train(make(arch), InMemoryStore(), cfg(), tmp_path / "b", progress=False)
    c = train(make(arch), InMemoryStore(), cfg(seed=8), tmp_path / "c", progress=False)
    assert_same_state(state(a.sae), state(b.sae))
    assert not torch.equal(a.sae.W_dec, c.sae.W_dec)
    assert strip_time(a.log) == strip_time(b.log)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_resume_after_interruption_is_bit_identical(arch, tmp_path):
    straight = train(make(arch), InMemoryStore(), cfg(), tmp_path / "straight", progress=False)

    # crash at batch 19: the checkpoint is at step 16, and log rows 17..19 were already written
    with pytest.raises(KeyboardInterrupt):
        train(make(arch), InMemoryStore(crash_at=19), cfg(), tmp_path / "resumed", progress=False)
    assert max(r["step"] for r in read_log(tmp_path / "resumed" / "train_log.jsonl")) == 18
    # fresh objects, as in a new process
    resumed = train(make(arch), InMemoryStore(), cfg(), tmp_path / "resumed", progress=False)

    assert resumed.resumed_from == 16
    assert_same_state(state(straight.sae), state(resumed.sae))
    assert strip_time(straight.log) == strip_time(resumed.log)
    assert straight.events == resumed.events
    if arch == "hierarchical":
        kinds = {e["event"] for e in straight.events}
        assert kinds == {"resample", "merge"}, "the test should exercise both mechanisms"
        assert any(e["step"] > 16 for e in straight.events)


def test_log_rows_and_export(tmp_path):
    res = train(
        make("hierarchical"),
        InMemoryStore(),
        cfg(),
        tmp_path,
        progress=False,
        metadata={"profile": "test"},
    )
    rows = read_log(tmp_path / "train_log.jsonl")
    metrics = [r for r in rows if r["kind"] == "metrics"]
    assert [r["step"] for r in metrics] == list(range(2, 25, 2))
    for key in ("loss", "mse", "l1", "l0", "ev", "dead", "dead_tokens", "lambda_t", "alpha_t"):
        assert key in metrics[0], key
    assert metrics[-1]["lambda_t"] == pytest.approx(NF**-0.5 / 24)  # lambda at t = T - 1
    assert 0.1 <= metrics[-1]["alpha_t"] <= 2.0
    assert metrics[-1]["ev"] > 0
    back = load_sae(tmp_path)
    assert_same_state(state(back), state(res.sae))
    info = json.loads((tmp_path / "hsae_config.json").read_text())
    assert info["metadata"] == {"profile": "test"} and info["train"]["seed"] == 7


def test_nan_loss_raises_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"step 11 \(batch index 10\).*step 8"):
        train(make("relu"), InMemoryStore(poison_at=10), cfg(log_every=5), tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 8
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_resume_refuses_a_different_config(tmp_path):
    train(make("relu"), InMemoryStore(), cfg(steps=8), tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(make("relu"), InMemoryStore(), cfg(steps=8, lr=1e-3), tmp_path, progress=False)


def test_batchtopk_threshold_gives_l0_near_k_on_held_out_tokens(tmp_path):
    """Issue 14, item 6: the inference JumpReLU threshold (an EMA of the smallest kept activation)
    must reproduce the training sparsity k on tokens the SAE never saw."""
    store = InMemoryStore(n_tokens=3072, seed=3)
    held_out_ND = store.data[2048:].clone()
    store.data, store.n_tokens = store.data[:2048], 2048
    sae = ARCHITECTURES["batchtopk"].config_class(d_in=D, d_sae=NF, k=4, dead_after_tokens=4 * B)
    result = train(
        ARCHITECTURES["batchtopk"](sae),
        store,
        cfg(steps=400, log_every=100, checkpoint_every=400),
        tmp_path,
        progress=False,
    )
    trained = result.sae.eval()
    with torch.no_grad():
        l0 = (trained.encode(held_out_ND) != 0).sum(-1).float().mean().item()
    assert trained.threshold > 0
    assert abs(l0 - 4) <= 0.2 * 4, f"held-out L0 {l0:.2f}, k = 4"


@pytest.mark.parametrize("decode", ["dense", "sparse"])
@pytest.mark.parametrize("n_dead", [0, 3, 40])
def test_auxk_without_host_sync_equals_the_gathered_loss(decode, n_dead):
    """The GPU path's AuxK (top-k over pre-activations with the live latents masked to -inf, no
    `nonzero()` host sync) against the CPU path's (the dead columns gathered): the same loss and
    gradients up to float rounding, with no dead latent, fewer than aux_k and more."""
    sae = TopKSAE(TopKSAEConfig(d_in=D, d_sae=NF, k=4, aux_k=16, dead_after_tokens=4 * B), seed=1)
    sae.decode_mode = decode
    sae.firing.tokens_since_fired_F[
        torch.randperm(NF, generator=torch.Generator().manual_seed(0))[:n_dead]
    ] = 4 * B
    x_BD = InMemoryStore().data[:B]

    def loss_and_grads():
        sae.zero_grad(set_to_none=True)
        out = sae.loss(x_BD, 0, 10)
        out.loss.backward()
        return out, [p.grad.clone() for p in sae.parameters()]

    gathered, grads_gathered = loss_and_grads()
    sae.aux_nmse_gathered = sae.aux_nmse_masked  # the path a CUDA batch takes
    masked, grads_masked = loss_and_grads()
    assert (gathered.metrics["aux"] > 0) == (n_dead > 0)
    torch.testing.assert_close(masked.metrics["aux"], gathered.metrics["aux"], rtol=1e-5, atol=0)
    torch.testing.assert_close(masked.loss, gathered.loss, rtol=1e-6, atol=0)
    for g_masked, g_gathered in zip(grads_masked, grads_gathered):
        torch.testing.assert_close(g_masked, g_gathered, rtol=1e-4, atol=1e-6)


def test_checkpoint_resumes_on_another_kind_of_device(tmp_path):
    """A checkpoint's mechanism generator cannot move between CPU (Mersenne Twister state) and
    CUDA (Philox seed and offset): a run resumed on the other kind of device re-seeds it from
    (seed, step) with a warning, and continues. Simulated on CPU: a CUDA-format state in the
    checkpoint, and a stand-in CUDA generator that checks the state's format as CUDA's does."""
    with pytest.raises(KeyboardInterrupt):  # the checkpoint of step 16 is kept
        train(
            make("hierarchical"),
            InMemoryStore(crash_at=19),
            cfg(),
            tmp_path / "run",
            progress=False,
        )
    ckpt_path = tmp_path / "run" / "checkpoint.pt"
    state = load_training_checkpoint(ckpt_path)
    assert state["generator_device"] == "cpu"

    # The same kind of device: restored exactly.
    g = torch.Generator().manual_seed(0)
    assert restore_generator(g, state["generator"], "cpu", seed=7, step=16)
    ref = torch.Generator()
    ref.set_state(state["generator"])
    assert torch.equal(torch.rand(8, generator=g), torch.rand(8, generator=ref))

    # A CUDA-format state into a CPU generator (a checkpoint written on a GPU, resumed on CPU):
    # set_state would fail; older checkpoints without "generator_device" are told apart by size.
    cuda_state = torch.zeros(16, dtype=torch.uint8)
    with pytest.raises(RuntimeError):
        torch.Generator().set_state(cuda_state)
    with pytest.warns(UserWarning, match="re-seeded"):
        assert not restore_generator(g, cuda_state, None, seed=7, step=16)
    reseeded = torch.Generator().manual_seed(7 * 1_000_003 + 16)
    assert torch.equal(torch.rand(8, generator=g), torch.rand(8, generator=reseeded))

    # A CPU state into a CUDA generator (written on CPU, resumed on a GPU).
    class CudaGenerator:
        device = torch.device("cuda")

        def set_state(self, new_state):
            if new_state.numel() != 16:
                raise RuntimeError("Expected a Philox state of 16 bytes")

        def manual_seed(self, seed):
            self.seed = seed

    fake = CudaGenerator()
    with pytest.warns(UserWarning, match="written on cpu and is resumed on cuda"):
        assert not restore_generator(fake, state["generator"], "cpu", seed=7, step=16)
    assert fake.seed == 7 * 1_000_003 + 16

    # The whole resume: a checkpoint marked as written on CUDA continues on CPU to the end.
    torch.save({**state, "generator": cuda_state, "generator_device": "cuda"}, ckpt_path)
    with pytest.warns(UserWarning, match="re-seeded"):
        res = train(make("hierarchical"), InMemoryStore(), cfg(), tmp_path / "run", progress=False)
    assert res.resumed_from == 16 and res.log[-1]["step"] == 24
    assert all(torch.isfinite(p).all() for p in res.sae.parameters())
