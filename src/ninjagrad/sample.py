"""Sampling names from a trained model, one character at a time."""
from __future__ import annotations

import torch

from .data import Vocab
from .models import Model

MAX_LEN = 60  # a name longer than this is cut: an untrained model may never emit '.'


@torch.no_grad()
def sample_words(model: Model, vocab: Vocab, num: int, generator: torch.Generator) -> list[str]:
    """Start from a context of '.', draw from softmax(logits) until '.' comes out."""
    device = model.device
    block_size = model.config.block_size
    words = []
    for _ in range(num):
        context = [0] * block_size
        out = []
        while len(out) < MAX_LEN:
            logits = model.logits(torch.tensor([context], device=device))  # (1, V)
            probs = torch.softmax(logits.float(), dim=1).cpu()
            ix = torch.multinomial(probs, num_samples=1, generator=generator).item()
            if ix == 0:
                break
            context = context[1:] + [ix]
            out.append(ix)
        words.append(vocab.decode(out))
    return words
