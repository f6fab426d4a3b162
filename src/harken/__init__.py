"""harken: train and run DeepSpeech speech-to-text models on PyTorch.

The inference API (DeepSpeech's, in Python): ``Model`` and ``Stream``; see harken.inference.
"""

__version__ = "0.1.0"

from harken.inference import CandidateTranscript, Metadata, Model, Stream, TokenMetadata  # noqa: E402

__all__ = ["CandidateTranscript", "Metadata", "Model", "Stream", "TokenMetadata", "__version__"]
