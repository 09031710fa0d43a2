"""What every model offers the training loop, the engines, sampling and checkpoints.

A model is one file: a config dataclass (a subclass of ModelConfig, a comment on every field) and a
subclass of Model that writes `init_params`, `param_names`, `forward`, `backward` and `logits`, and
`calibrate` when evaluation needs statistics of the training set (batchnorm), `activations` when it has
nonlinearities whose health a run records (diagnostics.py). Its registration is one line in
models/__init__.py (MODELS) and one in choices.py (the name the command line offers).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import NamedTuple

import torch


class ModelConfig:
    """Base of the models' config dataclasses. Every config has `vocab_size` (set from the data) and
    `block_size` (characters of context); the rest is the model's own."""

    vocab_size: int
    block_size: int

    def validate(self):
        """Raise UsageError, naming the flag, for settings the model cannot be built with."""

    def to_dict(self) -> dict:
        return asdict(self)


class Activation(NamedTuple):
    """A nonlinearity's values in a forward's cache, for the diagnostics of a run (diagnostics.py)."""
    kind: str  # "tanh" or "gelu": which saturation rule applies
    x: torch.Tensor | None  # its input, where the cache keeps it (GELU's); None for tanh, judged by its output
    out: torch.Tensor  # its output, the very tensor the next op reads


class Model:
    """Parameters in a dict under their names, a forward that keeps what the backward needs, and a
    hand-written backward that reads the forward bottom-up; no autograd anywhere."""

    name = ""  # the model's name in MODELS and on the command line
    default_optimizer = "sgd"  # the update of a run that names none (--optimizer)

    def __init__(self, config: ModelConfig, params: dict[str, torch.Tensor]):
        self.config = config
        self.params = params
        self.names = self.param_names(config)  # the parameters' order, in gradients and checkpoints
        # Data-parallel runs set this to an all-reduce (sum across processes), so that batch statistics
        # and the loss's mean cover the global batch; None means one process.
        self.reduce = None

    @classmethod
    def create(cls, config: ModelConfig, generator: torch.Generator, device="cpu", dtype=torch.float32) -> Model:
        """A new model, every initial value drawn from `generator`."""
        config.validate()
        params = cls.init_params(config, generator, dtype)
        return cls(config, {k: v.to(device) for k, v in params.items()})

    @staticmethod
    def init_params(config: ModelConfig, generator: torch.Generator, dtype=torch.float32) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def param_names(config: ModelConfig) -> tuple[str, ...]:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return self.params[self.names[0]].dtype

    @property
    def device(self) -> torch.device:
        return self.params[self.names[0]].device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.params.values())

    # --- training -------------------------------------------------------------------------------

    def forward(self, X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, object]:
        """The mean loss on a batch in training mode (X (B, T), Y (B,)), and the cache for `backward`:
        what each op's forward saved, in a structure that names the layers."""
        raise NotImplementedError

    def backward(self, cache, taps: dict | None = None) -> dict[str, torch.Tensor]:
        """The gradient of the loss with respect to every parameter, in `names` order: the ops of
        `forward`, each one's backward, in exact reverse order. `taps`, when given, receives the
        gradient of each output that `activations` names, under the same name."""
        raise NotImplementedError

    def activations(self, cache) -> dict[str, Activation]:
        """The nonlinearities of a forward's cache by layer name, bottom-up (the MLP's tanh, each WaveNet
        level's tanh, each transformer block's GELU); empty for a model with none to watch."""
        return {}

    # --- evaluation -----------------------------------------------------------------------------

    def calibrate(self, X: torch.Tensor, chunk: int | None = None):
        """Set what evaluation needs from the whole training set (batchnorm's statistics), in chunks
        of `chunk` rows; nothing for a model that needs nothing."""

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Evaluation mode: the next character's logits after each window, (N, T) -> (N, V)."""
        raise NotImplementedError

    # --- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Plain tensors on the CPU, so that `torch.load(weights_only=True)` reads them back."""
        return {"params": {k: v.detach().cpu() for k, v in self.params.items()}}

    def load_state_dict(self, state: dict):
        """Take the parameters of `state` into the model's own tensors; ValueError when a shape differs."""
        for k in self.names:
            src = state["params"][k]
            if src.shape != self.params[k].shape:
                raise ValueError(f"parameter {k}: shape {tuple(src.shape)} in the checkpoint, "
                                 f"{tuple(self.params[k].shape)} in the model")
            self.params[k].copy_(src)
