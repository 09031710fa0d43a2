"""The names the command line offers (models, engines, optimizers), in a module that imports nothing.

Parsing arguments, `--help` and argument errors must not pay for importing torch (seconds), and the
registries that hold the classes (models.MODELS, engines.ENGINES, optim.OPTIMIZERS) import it.
tests/test_startup.py holds each tuple here equal to its registry's names.
"""

MODELS = ("mlp", "transformer", "wavenet")
ENGINES = ("autograd", "compiled", "fast", "manual")
OPTIMIZERS = ("adamw", "sgd")
