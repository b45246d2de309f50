"""Auto-interpretation of latents, SAEBench's way (`sae_bench.evals.autointerp.main`), against any
OpenAI-compatible chat endpoint named by environment variables:

    HSAE_AUTOINTERP_BASE_URL   e.g. http://localhost:8000/v1 (a local vLLM / llama.cpp server)
    HSAE_AUTOINTERP_MODEL      the served model's name
    HSAE_AUTOINTERP_API_KEY    optional (servers without keys accept any)

Explanation: SAEBench's generation prompt (`AutoInterp.get_generation_prompts`) on a latent's
top contexts and quantile-interval samples, activating tokens marked << >>; its
`parse_explanation`. Detection score: SAEBench's scoring prompt on a shuffled mix of held-out top
contexts, interval samples and random contexts on which the latent is silent; its
`parse_predictions` and `score_predictions` (fraction of contexts classified right; 0.5 is
chance on a balanced mix). Our contexts come from `features.stats` (same validation tokens), not
from SAEBench's own sampling pass, so the numbers are SAEBench's protocol on our data.

A score depends on the explaining model: one too small to explain features measures the model,
not the SAE. `run_autointerp` therefore records the model's name with every score, and nothing
in this repository reports a score as a finding.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import torch

ENV = ("HSAE_AUTOINTERP_BASE_URL", "HSAE_AUTOINTERP_MODEL", "HSAE_AUTOINTERP_API_KEY")
HOW_TO = (
    "Auto-interpretation is not configured: set HSAE_AUTOINTERP_BASE_URL (an "
    "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1) and HSAE_AUTOINTERP_MODEL "
    "(and HSAE_AUTOINTERP_API_KEY if the server needs one), then re-run this cell."
)
ACT_THRESHOLD_FRAC = 0.01  # SAEBench's act_threshold_frac: active = above 1 % of the max


def autointerp_configured() -> bool:
    """True when an endpoint and a model are given (nothing is contacted)."""
    return bool(os.environ.get(ENV[0]) and os.environ.get(ENV[1]))


def _sae_bench():
    """SAEBench's autointerp module (a test dependency: scripts/install_test_deps.sh)."""
    try:
        import sae_bench.evals.autointerp.main as main
    except ImportError as err:
        raise ImportError(
            "Auto-interpretation uses SAEBench's prompts: install the test "
            "dependencies (scripts/install_test_deps.sh: sae-bench, openai)."
        ) from err
    return main


def _sae_bench_autointerp(n_ex_for_scoring: int, n_correct: int):
    """SAEBench's `AutoInterp` holding only its config: the prompt builders and parsers use
    nothing else (its constructor would gather data with its own model pass)."""
    from sae_bench.evals.autointerp.eval_config import AutoInterpEvalConfig

    AutoInterp = _sae_bench().AutoInterp

    ai = object.__new__(AutoInterp)
    cfg = AutoInterpEvalConfig()
    cfg.n_top_ex_for_scoring = 0
    cfg.n_iw_sampled_ex_for_scoring = n_correct
    cfg.n_random_ex_for_scoring = n_ex_for_scoring - n_correct
    ai.cfg = cfg
    return ai


class _Tokens:
    """What SAEBench's `Example` asks of a model: the text of each token id."""

    def __init__(self, token_str):
        self.token_str = token_str

    def to_str_tokens(self, toks: torch.Tensor) -> list[str]:
        return [self.token_str(int(t)) for t in toks.tolist()]


def examples(windows: list[tuple[list[int], list[float]]], max_act: float, token_str):
    """SAEBench `Example`s for (token ids, activations) windows, active above its threshold."""
    Example = _sae_bench().Example

    return [
        Example(toks, acts, ACT_THRESHOLD_FRAC * max_act, _Tokens(token_str))
        for toks, acts in windows
    ]


def window_ids(tokens_SC: torch.Tensor, ctx: dict) -> list[int]:
    """The token ids of a `features.stats` context (its tokens are their decoded text)."""
    start = ctx["pos"] - ctx["center"]
    return tokens_SC[ctx["seq"], start : start + len(ctx["tokens"])].tolist()


def in_order(items: list):
    """SAEBench `Examples` keeping the given order (its constructor sorts by activation, or
    shuffles with the global `random`)."""
    Examples = _sae_bench().Examples

    out = Examples([])
    out.examples = list(items)
    return out


@dataclass
class Prompts:
    generation: list[dict]  # chat messages
    scoring_examples: object  # SAEBench Examples, shuffled, for the scoring prompt
    ai: object  # SAEBench's AutoInterp (config, builders, parsers)

    def scoring(self, explanation: str) -> list[dict]:
        return self.ai.get_scoring_prompts(explanation, self.scoring_examples)


def build_prompts(
    latent: dict,
    negatives: list[tuple[list[int], list[float]]],
    tokens_SC: torch.Tensor,
    token_str,
    seed: int = 0,
) -> Prompts:
    """SAEBench's prompts for one latent record of `features.stats`: generation on half its top
    contexts and half its interval samples, scoring on the other halves plus `negatives`
    (windows where it is silent), shuffled with `seed`."""
    Examples = _sae_bench().Examples

    rng = random.Random(seed)
    top = [c for c in latent["contexts"] if c["group"] == "top"]
    samples = [c for c in latent["contexts"] if c["group"] != "top"]
    rng.shuffle(top), rng.shuffle(samples)
    as_windows = lambda cs: [(window_ids(tokens_SC, c), c["acts"]) for c in cs]  # noqa: E731
    gen = as_windows(top[: (len(top) + 1) // 2] + samples[: (len(samples) + 1) // 2])
    held = as_windows(top[(len(top) + 1) // 2 :] + samples[(len(samples) + 1) // 2 :])
    max_act = latent["max_act"]
    scoring = examples(held, max_act, token_str) + examples(negatives, max_act, token_str)
    rng.shuffle(scoring)
    ai = _sae_bench_autointerp(len(scoring), len(held))
    return Prompts(
        ai.get_generation_prompts(Examples(examples(gen, max_act, token_str))),
        in_order(scoring),
        ai,
    )


def _chat(messages: list[dict], max_tokens: int, timeout: float = 120) -> str:
    """One chat completion from the configured OpenAI-compatible endpoint (its plain HTTP API,
    so no client library is needed)."""
    import json
    import urllib.request

    url = os.environ[ENV[0]].rstrip("/") + "/chat/completions"
    body = json.dumps(
        {"model": os.environ[ENV[1]], "messages": messages, "max_tokens": max_tokens}
    ).encode()
    req = urllib.request.Request(
        url,
        body,
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {os.environ.get(ENV[2]) or 'none'}",
        },
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        out = json.loads(resp.read())
    return (out["choices"][0]["message"]["content"] or "").strip()


def run_autointerp(
    data: dict,
    latent_ids: list[int],
    negatives: dict[int, list],
    tokens_SC: torch.Tensor,
    token_str,
    seed: int = 0,
) -> list[dict]:
    """Explain and score some latents of a `features.stats` data dict with the configured
    endpoint; `negatives[latent]`: silent windows for its scoring set. Each row names the
    explaining model."""
    if not autointerp_configured():
        raise RuntimeError(HOW_TO)
    rows = []
    by_id = {rec["id"]: rec for rec in data["latents"]}
    for f in latent_ids:
        p = build_prompts(by_id[f], negatives.get(f, []), tokens_SC, token_str, seed)
        explanation = p.ai.parse_explanation(_chat(p.generation, 60))
        predictions = p.ai.parse_predictions(
            _chat(p.scoring(explanation), p.ai.cfg.max_tokens_in_prediction)
        )
        score = (
            None if predictions is None else p.ai.score_predictions(predictions, p.scoring_examples)
        )
        rows.append(
            {
                "latent": f,
                "explanation": explanation,
                "detection_score": score,
                "n_scoring": len(p.scoring_examples),
                "explainer": os.environ[ENV[1]],
            }
        )
    return rows


def silent_windows(
    encode, rows, latent: int, n: int, left: int = 8, right: int = 3, seed: int = 0
) -> list[tuple[list[int], list[float]]]:
    """Up to n random windows of the validation tokens (`features.rows.ValidationRows`) on which
    `latent` is zero at every token: the negatives of the scoring set."""
    from hsae_utils.features.stats import Codes, window_acts

    g = torch.Generator().manual_seed(seed)
    S, C = rows.tokens_SC.shape
    row_of = {(int(s), int(p)): r for r, (s, p) in enumerate(rows.positions_R2.tolist())}
    codes = Codes(encode, rows.x_ND, max_bytes=0)  # only the windows' rows are encoded
    out = []
    for r in torch.randperm(rows.positions_R2.shape[0], generator=g)[: 4 * n].tolist():
        s, p = (int(v) for v in rows.positions_R2[r])
        span = list(range(max(0, p - left), min(C, p + right + 1)))
        win = torch.tensor([row_of.get((s, q), -1) for q in span])
        acts = window_acts(codes, win, torch.full_like(win, latent))
        if (acts <= 0).all():
            out.append((rows.tokens_SC[s, span].tolist(), acts.tolist()))
        if len(out) == n:
            break
    return out
