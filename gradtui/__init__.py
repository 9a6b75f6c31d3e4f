"""gradtui: live gradient-flow telemetry for PyTorch training, in your terminal."""

__version__ = "0.1.0"
