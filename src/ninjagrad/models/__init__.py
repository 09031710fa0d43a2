"""One file per model: a config dataclass, initialisation, forward (with cache), backward (its reverse).

models/base.py says what every model offers (Model, ModelConfig); a new model is one file and one row
of MODELS below (and its name in ninjagrad/choices.py, which the command line offers).
"""
from .base import Model, ModelConfig
from .mlp import MLP, MLPConfig
from .transformer import Transformer, TransformerConfig
from .wavenet import WaveNet, WaveNetConfig

MODELS: dict[str, tuple[type[Model], type[ModelConfig]]] = {
    "mlp": (MLP, MLPConfig), "wavenet": (WaveNet, WaveNetConfig), "transformer": (Transformer, TransformerConfig),
}

__all__ = ["Model", "ModelConfig", "MLP", "MLPConfig", "WaveNet", "WaveNetConfig", "Transformer",
           "TransformerConfig", "MODELS"]
