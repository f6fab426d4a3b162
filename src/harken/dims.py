"""A model's dimensions: what it takes (the front end), its geometry and what it spells (the alphabet).

These are what a model *is*, apart from how it was trained (data, learning rate, dropout): a checkpoint
stores them alone as ``payload["dims"]`` and the run's settings apart (checkpoint.py), so loading a model
for inference, export or import needs nothing of the run that made it, and a model without one (imported,
exported) has the same dims as a trained one. Whisper's checkpoints store their ``dims`` the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from harken import config as config_module
from harken.alphabet import Alphabet
from harken.config import Config, FeatureConfig, ModelConfig


@dataclass(frozen=True)
class ModelDims:
    """The front end, the geometry and the alphabet of a model: all that building it for inference needs."""

    features: FeatureConfig  # every field shapes or feeds the model's input (feature_norm_* included)
    n_hidden: int
    relu_clip: float  # the dense layers' ReLU ceiling: part of the function the weights compute
    bidirectional: bool
    alphabet: Alphabet

    GEOMETRY: ClassVar[tuple[str, ...]] = ("n_hidden", "relu_clip", "bidirectional")  # ModelConfig's fields

    @classmethod
    def of(cls, features: FeatureConfig, model: ModelConfig, alphabet: Alphabet) -> ModelDims:
        return cls(features, model.n_hidden, model.relu_clip, model.bidirectional, alphabet)

    @classmethod
    def from_config(cls, config: Config, alphabet: Alphabet) -> ModelDims:
        """The dims of a run's model (``config.features`` should be resolved: no ``feature_norm auto``)."""
        return cls.of(config.features, config.model, alphabet)

    def model_config(self, trained: ModelConfig | None = None) -> ModelConfig:
        """A ModelConfig of this geometry; its dropout rates (training settings) ``trained``'s, else the
        defaults (a model built for inference runs in eval mode, where they do nothing)."""
        geometry = {name: getattr(self, name) for name in self.GEOMETRY}
        return dataclasses.replace(trained or ModelConfig(), **geometry)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (as a checkpoint stores them): the front end as a dict, the alphabet serialised."""
        return {
            "features": config_module.to_dict(self.features),
            **{name: getattr(self, name) for name in self.GEOMETRY},
            "alphabet": self.alphabet.serialize(),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelDims:
        """``to_dict``'s output back (a front-end option it lacks means what it meant before the option
        existed, as for any stored configuration: ``FeatureConfig.STORED_BEFORE``)."""
        features = config_module.from_dict(FeatureConfig, values["features"], stored=True)
        model = config_module.from_dict(ModelConfig, {n: values[n] for n in cls.GEOMETRY if n in values})
        return cls.of(features, model, Alphabet.from_serialized(values["alphabet"]))

    @classmethod
    def from_stored_config(cls, values: dict[str, Any], alphabet: Any) -> ModelDims:
        """The dims within a whole stored configuration (``config.to_dict(Config)``'s output, as format-1
        checkpoints hold it; an export's metadata has its features and model sections) and a serialised
        alphabet."""
        config = config_module.from_dict(Config, values, stored=True)
        return cls.from_config(config, Alphabet.from_serialized(alphabet))
