"""One file per model: a config dataclass, initialisation, forward (with cache), backward (its reverse)."""
from .mlp import MLP, MLPConfig

MODELS = {"mlp": (MLP, MLPConfig)}

__all__ = ["MLP", "MLPConfig", "MODELS"]
