"""Checkpoints: {dims, run, weights, optimizer, progress, RNG} saved atomically, found, checked.

A directory holds ``train-<step>.pt`` (the newest ``max_to_keep``) and ``best_dev-<step>.pt`` (one).
Every file is written to a temporary name, flushed to disk and renamed, so a kill at any moment leaves
the previous checkpoints intact; a file that still fails to load is skipped for the one before it.

``dims`` is the model's front end, geometry and alphabet (``dims.ModelDims`` as a dict), all that loading
it needs; ``run`` the other settings of the run that saved it (data, optimiser, schedule, dropout; None
for an imported model). Format 1 stored one ``config`` with both and the ``alphabet`` beside it; such
files still load (``stored_dims`` reads the dims out of the config).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harken import config as config_module
from harken.alphabet import Alphabet
from harken.config import Config, FeatureConfig
from harken.dims import ModelDims
from harken.model import DeepSpeech
from harken.storage import atomic_write

FORMAT = "harken-checkpoint"
VERSION = 2  # 2: the model's dims apart from the run's settings; 1: one config held both
TRAIN, BEST = "train", "best_dev"
_NAME = re.compile(r"^(train|best_dev)-(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the run; one line, naming the file."""


def listing(directory: Path, kind: str) -> list[Path]:
    """Checkpoints of ``kind`` in ``directory``, oldest step first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match and match.group(1) == kind:
            found.append((int(match.group(2)), path))
    return [path for _, path in sorted(found)]


def listing_any(directory: Path) -> bool:
    """Whether ``directory`` holds any checkpoint."""
    return bool(listing(directory, TRAIN) or listing(directory, BEST))


def remove_temporary(directory: Path) -> None:
    """Delete the temporary files of saves that a killed process never finished."""
    if directory.is_dir():
        for stale in directory.glob(".*.pt.*.tmp"):
            stale.unlink(missing_ok=True)


def save(directory: Path, kind: str, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Write ``payload`` as ``<kind>-<step>.pt`` atomically and delete all but the newest ``keep``."""
    target = directory / f"{kind}-{step}.pt"
    with atomic_write(target, "wb") as handle:
        torch.save(payload, handle)
    for old in listing(directory, kind)[: -max(1, keep)]:
        if old != target:
            old.unlink(missing_ok=True)
    return target


def read(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load one checkpoint file; CheckpointError if it is not a harken checkpoint."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as error:  # torch raises many types for damaged files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a harken checkpoint")
    version = payload.get("version", 1)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: written by a newer harken (format {version})")
    check_parts(path, payload)
    return payload


def check_parts(path: Path, payload: dict[str, Any]) -> None:
    """CheckpointError naming what is missing or unreadable in a damaged payload of its format."""
    needed = ("dims", "model") if payload.get("version", 1) >= 2 else ("config", "alphabet", "model")
    missing = [
        part
        for part in needed
        if payload.get(part) is None or (part != "alphabet" and not isinstance(payload[part], dict))
    ]
    if missing:
        raise CheckpointError(f"{path}: a damaged checkpoint (no readable {', '.join(missing)})")
    try:
        stored_dims(payload)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        why = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path}: a damaged checkpoint: its model dimensions do not read ({why})"
        ) from None


def newest(
    directory: Path,
    kinds: tuple[str, ...],
    device: torch.device | str = "cpu",
    warn: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable checkpoint, trying ``kinds`` in order; None when the directory has none."""
    for kind in kinds:
        for path in reversed(listing(directory, kind)):
            try:
                return path, read(path, device)
            except CheckpointError as error:
                warn(f"warning: skipping {error}")
    return None


def kinds_for(mode: str, training: bool) -> tuple[str, ...]:
    """Which checkpoints a --load_train / --load_evaluate mode looks at, in order."""
    if mode == "last":
        return (TRAIN,)
    if mode == "best":
        return (BEST,)
    if mode == "init":
        return ()
    return (TRAIN, BEST) if training else (BEST, TRAIN)


def stored_dims(payload: dict[str, Any]) -> ModelDims:
    """The model's dimensions: ``payload["dims"]``, or (format 1) what the whole stored config says."""
    if payload.get("version", 1) >= 2:
        return ModelDims.from_dict(payload["dims"])
    return ModelDims.from_stored_config(payload["config"], payload["alphabet"])


def stored_run(payload: dict[str, Any]) -> Config | None:
    """The settings of the run that saved ``payload``, with the model's dims (None: an imported model)."""
    if payload.get("version", 1) < 2:  # format 1: one config held both
        return config_module.from_dict(Config, payload["config"], stored=True)
    if payload.get("run") is None:
        return None
    run = config_module.from_dict(Config, payload["run"], stored=True)
    dims = stored_dims(payload)
    return dataclasses.replace(run, features=dims.features, model=dims.model_config(run.model))


def stored_alphabet(payload: dict[str, Any]) -> Alphabet:
    return stored_dims(payload).alphabet


def _run_settings(config: Config) -> dict[str, Any]:
    """``config`` as stored beside the dims: every section but the front end, the model's without its
    geometry (the dims hold both)."""
    run = config_module.to_dict(config)
    del run["features"]
    run["model"] = {k: v for k, v in run["model"].items() if k not in ModelDims.GEOMETRY}
    return run


# What a run that continues a checkpoint must share with it (the run's relu_clip and dropout rates win).
COMPARED = (*(f.name for f in dataclasses.fields(FeatureConfig)), "n_hidden", "bidirectional")


def resolve_front_end(config: Config, payload: dict[str, Any] | None) -> Config:
    """``config`` with ``--feature_norm auto`` made definite: mean for a new model (``payload`` None), the
    checkpoint's own for one trained further. An explicit choice stays (``check_compatible`` then refuses
    one that differs from the checkpoint's; re-initialising layers, which skips that check, takes it)."""
    wanted = config.features.feature_norm
    if wanted != "auto":
        return config
    chosen = "mean" if payload is None else stored_dims(payload).features.feature_norm
    return dataclasses.replace(config, features=dataclasses.replace(config.features, feature_norm=chosen))


def check_compatible(path: Path, payload: dict[str, Any], config: Config, alphabet: Alphabet) -> None:
    """Refuse a checkpoint whose geometry or alphabet differs from the run's, naming what differs."""
    stored = stored_dims(payload)
    wanted = ModelDims.from_config(resolve_front_end(config, payload), alphabet)
    for name in COMPARED:
        if name.startswith("feature_norm_") and stored.features.feature_norm == "none":
            continue  # no running mean: its window and silence mean nothing
        have, want = _dimension(stored, name), _dimension(wanted, name)
        if have != want:
            raise CheckpointError(
                f"{path}: checkpoint has {name} {have}, this run asks for {want} "
                f"(pass --{name} {have}, or use another checkpoint directory)"
            )
    if stored.alphabet != alphabet:
        raise CheckpointError(
            f"{path}: checkpoint alphabet {_describe_difference(stored.alphabet, alphabet)} "
            "(to fine-tune to a new alphabet, re-initialise the output layer: --drop_source_layers 1)"
        )


def _dimension(dims: ModelDims, name: str) -> Any:
    return getattr(dims, name) if name in ModelDims.GEOMETRY else getattr(dims.features, name)


LAYERS = ("layer_1", "layer_2", "layer_3", "lstm", "layer_5", "layer_6")


def load_layers(
    model: torch.nn.Module, path: Path, payload: dict[str, Any], drop: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Load all but the last ``drop`` layers of the checkpoint into ``model`` (fine-tuning with
    --drop_source_layers; the others keep their fresh initialisation). Returns (kept, dropped) layer
    names; a kept tensor that is missing or of another shape is a CheckpointError naming it."""
    kept, dropped = LAYERS[: len(LAYERS) - drop], LAYERS[len(LAYERS) - drop :]
    source: dict[str, torch.Tensor] = payload["model"]
    for name, tensor in model.state_dict().items():
        if name.split(".")[0] in kept:
            theirs = source.get(name)
            if theirs is None or theirs.shape != tensor.shape:
                found = "missing" if theirs is None else f"of shape {tuple(theirs.shape)}"
                raise CheckpointError(
                    f"{path}: {name} is {found}, this run's is {tuple(tensor.shape)} "
                    f"(keep the source's geometry, or drop more layers than --drop_source_layers {drop})"
                )
    model.load_state_dict({k: v for k, v in source.items() if k.split(".")[0] in kept}, strict=False)
    return kept, dropped


def restore_rng(payload: dict[str, Any], cuda: bool) -> None:
    """Put back the random number generators ``make_payload`` saved (CUDA's too when ``cuda``)."""
    if "rng" in payload:
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        if cuda and "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in payload["rng"]["cuda"]])


def _describe_difference(theirs: Alphabet, ours: Alphabet) -> str:
    if len(theirs) != len(ours):
        return f"has {len(theirs)} symbols, this run's has {len(ours)}"
    for index, (a, b) in enumerate(zip(theirs.symbols, ours.symbols, strict=True)):
        if a != b:
            return f"has {a!r} at label {index}, this run's alphabet has {b!r}"
    return "differs"


@dataclass
class LoadedModel:
    model: DeepSpeech
    dims: ModelDims  # what the model is: front end, geometry, alphabet
    path: Path
    run: Config | None = None  # the settings of the run that saved it (None: an imported model)

    @property
    def alphabet(self) -> Alphabet:
        return self.dims.alphabet


def load_model(directory: Path, mode: str = "auto", device: torch.device | str = "cpu") -> LoadedModel:
    """The model in ``directory`` for evaluation or inference (best_dev first unless ``mode`` says)."""
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    found = newest(directory, kinds_for(mode, training=False), device)
    if found is None:
        raise CheckpointError(f"{directory}: no checkpoint found (looked for {mode} checkpoints)")
    return _loaded(found[0], found[1], device)


def load_file(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """A model from one file: a harken checkpoint (.pt) or a DeepSpeech / Coqui STT model (.tflite)."""
    if path.suffix.lower() == ".tflite":
        from harken.interop.tflite import read_tflite

        imported = read_tflite(path)
        return _model(path, imported.dims, imported.state_dict, device)
    return _loaded(path, read(path, device), device)


def _loaded(path: Path, payload: dict[str, Any], device: torch.device | str) -> LoadedModel:
    run = stored_run(payload)
    return _model(path, stored_dims(payload), payload["model"], device, run)


def _model(
    path: Path,
    dims: ModelDims,
    weights: dict[str, torch.Tensor],
    device: torch.device | str,
    run: Config | None = None,
) -> LoadedModel:
    model = DeepSpeech(dims.features, dims.model_config(), dims.alphabet.n_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(
            f"{path}: weights do not fit the stored geometry ({_first_line(error)})"
        ) from None
    model.to(device).eval()
    return LoadedModel(model, dims, path, run)


def make_payload(
    config: Config,
    alphabet: Alphabet,
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A training run's checkpoint: the model's dims (from ``config``, resolved, and ``alphabet``) and the
    run's other settings apart; the RNG state is the current one."""
    dims = ModelDims.from_config(config, alphabet)
    return model_payload(dims, weights, _run_settings(config), optimizer, progress)


def model_payload(
    dims: ModelDims,
    weights: dict[str, torch.Tensor],
    run: dict[str, Any] | None = None,
    optimizer: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A checkpoint's contents (format 2): ``dims`` and ``run`` are plain dicts (``run`` None: a model no
    harken run made, such as an import)."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "format": FORMAT,
        "version": VERSION,
        "dims": dims.to_dict(),
        "run": run,
        "model": weights,
        "optimizer": optimizer,
        "progress": progress or {},
        "rng": rng,
    }


def import_model(source: Path, target: Path, alphabet_path: Path | None = None) -> tuple[Path, LoadedModel]:
    """Write a model (a .tflite, or a DeepSpeech TensorFlow checkpoint: a directory, a prefix such as
    ``release/best_dev-1466475`` or its .index) as a harken checkpoint in ``target`` (train-0.pt).
    ``alphabet_path`` is the TensorFlow checkpoint's alphabet (a .tflite carries its own)."""
    if listing_any(target):
        raise CheckpointError(f"{target} already holds checkpoints; import into an empty directory")
    from harken.interop import tf_checkpoint

    if source.suffix.lower() not in (".tflite", ".pt") or tf_checkpoint.is_checkpoint(source):
        imported = tf_checkpoint.read_checkpoint(source, alphabet_path)
        prefix = Path(imported.metadata["prefix"])
        loaded = _model(prefix, imported.dims, imported.state_dict, "cpu")
    else:
        loaded = load_file(source)
        given = Alphabet.load(alphabet_path) if alphabet_path is not None else loaded.alphabet
        if given != loaded.alphabet:
            raise CheckpointError(
                f"{source} carries its own alphabet ({len(loaded.alphabet)} symbols), which differs from "
                f"{alphabet_path}; leave out --alphabet_config_path"
            )
    run = None if loaded.run is None else _run_settings(loaded.run)
    payload = model_payload(loaded.dims, loaded.model.state_dict(), run)
    return save(target, TRAIN, 0, payload, keep=1), loaded


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
