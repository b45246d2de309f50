import torch

from hsae_utils.forward import causal_mask, logits_from_layer, resid_at_layer

from .conftest import TINY_D, TINY_LAYERS


def test_causal_mask_blocks_the_future():
    m = causal_mask(3, torch.float32, "cpu")[0, 0]
    assert m.shape == (3, 3)
    assert torch.isinf(m[0, 1]) and m[1, 0] == 0 and m[2, 2] == 0


def test_resid_at_layer_matches_full_run(tiny_model):
    tokens = torch.randint(2, 40, (2, 16))
    _, cache = tiny_model.run_with_cache(tokens)
    for layer in (0, TINY_LAYERS - 2):
        resid = resid_at_layer(tiny_model, tokens, layer)
        assert resid.shape == (2, 16, TINY_D)
        torch.testing.assert_close(resid, cache[f"blocks.{layer}.hook_resid_post"])


def test_logits_from_layer_reproduces_clean_logits(tiny_model):
    tokens = torch.randint(2, 40, (2, 16))
    with torch.no_grad():
        clean = tiny_model(tokens)
    for layer in (0, 1, TINY_LAYERS - 1):
        resid = resid_at_layer(tiny_model, tokens, layer)
        torch.testing.assert_close(logits_from_layer(tiny_model, resid, layer), clean)


def test_logits_from_layer_is_causal(tiny_model):
    """Changing the residual at the last position must not change earlier logits."""
    tokens = torch.randint(2, 40, (1, 8))
    resid = resid_at_layer(tiny_model, tokens, 1)
    edited = resid.clone()
    edited[:, -1] += 5.0
    a, b = logits_from_layer(tiny_model, resid, 1), logits_from_layer(tiny_model, edited, 1)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])
