"""ninjagrad: hand-written backpropagation for the makemore models."""

__version__ = "0.1.0"
