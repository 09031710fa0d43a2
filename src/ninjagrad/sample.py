"""Sampling names from a trained model, one character at a time, and the model of a run's checkpoint
made ready for it."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoint import model_from_checkpoint
from .data import Vocab, load_corpus, make_splits
from .errors import UsageError
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
            if not bool(torch.isfinite(probs).all()):
                raise UsageError("the model's next-character probabilities are not finite numbers (its weights "
                                 "overflow); sample from an earlier checkpoint or train with a smaller --lr")
            ix = torch.multinomial(probs, num_samples=1, generator=generator).item()
            if ix == 0:
                break
            context = context[1:] + [ix]
            out.append(ix)
        words.append(vocab.decode(out))
    return words


def model_for_sampling(payload: dict, path: Path, say: Callable[[str], None]) -> tuple[Model, Vocab]:
    """The model of a run's checkpoint (checkpoint.load_checkpoint's payload) and its vocabulary. A
    checkpoint saved before the run's end holds batchnorm statistics of another step (or none yet): they
    are calibrated here over the run's training set, saying so through `say`."""
    model = model_from_checkpoint(payload, path)
    if needs_calibration(payload):
        Xtr = training_set(payload, path)
        say(f"{path}: saved at step {payload['step']:,} of {payload['train_config']['steps']:,}, where "
            "batchnorm's statistics are not calibrated; calibrating them over the run's training set")
        model.calibrate(Xtr)
    return model, Vocab(tuple(payload["vocab"]))


def needs_calibration(payload: dict) -> bool:
    """Whether the checkpoint's evaluation statistics (what it keeps besides the parameters: batchnorm's)
    belong to another step than its parameters. Checkpoints without `calibrated_step` were calibrated
    at the run's end only."""
    if set(payload["state"]) == {"params"}:
        return False
    at_end = payload["step"] if payload["step"] == payload["train_config"].get("steps") else None
    return payload.get("calibrated_step", at_end) != payload["step"]


def training_set(payload: dict, path: Path) -> torch.Tensor:
    """The run's training windows Xtr, from its corpus as its settings name it; one line when the corpus
    cannot be read or no longer gives the run's vocabulary."""
    tc = payload["train_config"]
    finish = f"finish the run with `ninjagrad train --resume {path}`, which calibrates at its end"
    try:
        words, source = load_corpus(tc.get("data"), tc.get("year"))
        splits = make_splits(words, payload["model_config"]["block_size"], source)
    except (UsageError, TypeError, ValueError) as e:
        raise UsageError(f"{path}: cannot calibrate batchnorm: the run's training set is unreadable ({e}); "
                         f"{finish}") from None
    if list(splits.vocab.itos) != payload["vocab"]:
        raise UsageError(f"{path}: cannot calibrate batchnorm: the corpus {source} no longer gives the run's "
                         f"vocabulary; {finish}")
    return splits.Xtr
