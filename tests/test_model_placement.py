"""Loading the model (hsae_utils.data.model): weights placed by from_pretrained's device map, and
TF32 switched on only inside the model's forward (CPU checks of the CUDA code paths)."""

from __future__ import annotations

import pytest
import torch

from hsae_utils.data.model import placement, use_tf32_in_forward


def test_placement_is_a_device_map_on_cuda_and_a_device_on_the_cpu():
    assert placement("cpu") == {"device": "cpu"}
    assert placement("cuda:1") == {"device_map": {"": "cuda:1"}}


def test_a_one_device_map_boots_the_same_model(tiny_model_dir, tiny_model):
    """The device_map path of boot_transformers (what CUDA uses), exercised on the CPU: the same
    weights and logits as the device= path."""
    from transformer_lens.model_bridge import TransformerBridge

    mapped = TransformerBridge.boot_transformers(str(tiny_model_dir), device_map={"": "cpu"})
    mapped.eval()
    tokens = torch.arange(1, 17)[None]
    with torch.no_grad():
        torch.testing.assert_close(mapped(tokens), tiny_model(tokens), atol=0, rtol=0)


@pytest.fixture
def tf32_model(tiny_model_dir):
    from transformer_lens.model_bridge import TransformerBridge

    model = TransformerBridge.boot_transformers(str(tiny_model_dir), device="cpu")
    model.eval()
    seen = []
    use_tf32_in_forward(model)
    # inside each layer's forward: its MLP's pre-hook
    for layer in model.original_model.model.layers:
        layer.mlp.register_forward_pre_hook(
            lambda m, a: seen.append(torch.backends.cuda.matmul.allow_tf32)
        )
    return model, seen


def test_tf32_is_on_inside_the_layers_and_restored_after(tf32_model):
    model, seen = tf32_model
    before = torch.backends.cuda.matmul.allow_tf32
    assert before is False  # torch's default: the SAE maths are exact fp32
    tokens = torch.arange(1, 9)[None]
    with torch.no_grad():
        model(tokens)
        assert len(seen) == 4 and all(seen)  # every layer of the tiny model
        assert torch.backends.cuda.matmul.allow_tf32 is False
        # a partial forward that stops with the bridge's exception restores it too
        seen.clear()
        model.run_with_cache(tokens, names_filter="blocks.1.hook_resid_post", stop_at_layer=2)
        assert seen and all(seen)
        assert torch.backends.cuda.matmul.allow_tf32 is False
