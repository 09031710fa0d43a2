"""One file per model: a config dataclass, initialisation, forward (with cache), backward (its reverse)."""
from .mlp import MLP, MLPConfig
from .transformer import Transformer, TransformerConfig
from .wavenet import WaveNet, WaveNetConfig

MODELS = {"mlp": (MLP, MLPConfig), "wavenet": (WaveNet, WaveNetConfig),
          "transformer": (Transformer, TransformerConfig)}

__all__ = ["MLP", "MLPConfig", "WaveNet", "WaveNetConfig", "Transformer", "TransformerConfig", "MODELS"]
