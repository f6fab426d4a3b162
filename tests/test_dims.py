from harken import config as config_module
from harken.alphabet import Alphabet
from harken.config import Config, FeatureConfig, ModelConfig
from harken.dims import ModelDims


def test_dims_round_trip_and_give_back_the_model_config() -> None:
    config = Config(
        features=FeatureConfig(n_mfcc=13, n_context=5, feature_norm="mean", feature_norm_window=100),
        model=ModelConfig(n_hidden=24, relu_clip=10.0, bidirectional=True, dropout_rate=0.2),
    )
    alphabet = Alphabet(["a", "b", " "])
    dims = ModelDims.from_config(config, alphabet)
    values = dims.to_dict()
    assert values == {
        "features": config_module.to_dict(config.features),
        "n_hidden": 24,
        "relu_clip": 10.0,
        "bidirectional": True,
        "alphabet": ["a", "b", " "],
    }
    assert ModelDims.from_dict(values) == dims
    assert dims.model_config() == ModelConfig(n_hidden=24, relu_clip=10.0, bidirectional=True)
    assert dims.model_config(config.model) == config.model  # the dropout rates are the run's
    del values["features"]["feature_norm"]  # a front end stored without an option: what it meant before
    assert ModelDims.from_dict(values).features.feature_norm == "none"


def test_dims_within_a_whole_stored_config() -> None:
    """A format-1 checkpoint's config (or an export's features and model sections) gives the dims."""
    config = Config(model=ModelConfig(n_hidden=8, relu_clip=5.0), features=FeatureConfig(feature_norm="mean"))
    values = config_module.to_dict(config)
    dims = ModelDims.from_stored_config(values, ["x", "y"])
    assert dims == ModelDims.from_config(config, Alphabet(["x", "y"]))
    exported = {"features": values["features"], "model": values["model"]}
    assert ModelDims.from_stored_config(exported, ["x", "y"]) == dims
