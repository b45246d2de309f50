"""Turning documents into fixed-length model contexts, with explicit BOS handling.

Documents are tokenized without special tokens, joined with a document-boundary token, and cut
into windows of `context_size - 1` tokens; every context then starts with a BOS token. This is the
SAELens convention, and it gives every context the same first token, whose activation (an
attention sink with a very large norm) is excluded from training and from every evaluation average.

Which token is "BOS":
- SmolLM2 (like GPT-2) was pre-trained on documents separated by `<|endoftext|>` with no BOS; its
  GGUF tokenizer names the chat token `<|im_start|>` as BOS, which never starts plain text. So when
  the vocabulary has `<|endoftext|>` we use it: the token that starts each document in the
  pre-training stream.
- Otherwise (Gemma-2, which saw `<bos>` at the start of every input) `tokenizer.bos_token_id`.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch


def bos_token_id(tokenizer) -> int:
    """The token placed at position 0 of every context (see module docstring)."""
    eot = tokenizer.get_vocab().get("<|endoftext|>")
    if eot is not None:
        return eot
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    raise ValueError("The tokenizer has neither a BOS nor an <|endoftext|> token; set one.")


def special_token_ids(tokenizer) -> list[int]:
    """Ids excluded from SAE training and evaluation averages (BOS, EOS, pad, ...)."""
    return sorted(set(tokenizer.all_special_ids) | {bos_token_id(tokenizer)})


def iter_contexts(
    texts: Iterable[str], tokenizer, context_size: int, n_contexts: int | None = None
) -> Iterator[list[int]]:
    """Yield contexts of exactly `context_size` ids: [BOS] + (context_size - 1) text tokens.

    Documents are separated by the BOS/boundary token, so a context may contain a boundary token
    in its body; those positions are special tokens too and are excluded downstream.
    """
    bos = bos_token_id(tokenizer)
    body = context_size - 1
    buffer: list[int] = []
    produced = 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        buffer.extend(ids)
        buffer.append(bos)  # document boundary
        while len(buffer) >= body:
            yield [bos] + buffer[:body]
            buffer = buffer[body:]
            produced += 1
            if n_contexts is not None and produced >= n_contexts:
                return


def make_contexts(
    texts: Iterable[str], tokenizer, context_size: int, n_contexts: int
) -> torch.Tensor:
    """[n_contexts, context_size] int64 tokens; raises if the texts run out first."""
    rows = list(iter_contexts(texts, tokenizer, context_size, n_contexts))
    if len(rows) < n_contexts:
        raise ValueError(
            f"The corpus yields only {len(rows)} contexts of {context_size} tokens, "
            f"{n_contexts} requested: lower the profile's token budget or add text."
        )
    return torch.tensor(rows, dtype=torch.long)


def keep_mask(
    tokens_BS: torch.Tensor, resid_BSD: torch.Tensor, special_ids, massive_factor: float | None
) -> torch.Tensor:
    """Positions an SAE is trained and evaluated on: not a special token, and not a "massive
    activation" (Sun et al. 2024) whose norm exceeds `massive_factor` x the median token norm of
    the batch.

    SmolLM2 turns the first token after BOS into a second attention sink: about 0.1 % of tokens,
    ~75x the median norm, which would dominate every squared-error average (the mean squared norm
    of the cache triples with them). They are treated like BOS: kept out of training, left
    unchanged in the splice, excluded from averages. `None` disables the rule.
    """
    special = torch.tensor(sorted(int(i) for i in special_ids), device=tokens_BS.device)
    keep_BS = ~torch.isin(tokens_BS, special)
    if massive_factor is not None and keep_BS.any():
        norms_BS = resid_BSD.norm(dim=-1).to(tokens_BS.device)
        keep_BS &= norms_BS <= massive_factor * norms_BS[keep_BS].median()
    return keep_BS
