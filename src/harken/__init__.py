"""harken: train and run DeepSpeech speech-to-text models on PyTorch."""

__version__ = "0.1.0"
