"""A trained model -> ONNX: one graph for whole files and streams, float or int8, checked before success.

The graph takes context windows and the LSTM state and returns log-probabilities and the new state:

    windows [batch, time, n_input], h0 [1, batch, n_hidden], c0 [1, batch, n_hidden]
      -> log_probs [batch, time, n_classes], hn [1, batch, n_hidden], cn [1, batch, n_hidden]

so a file is one call with zero state, and a stream is many calls that pass the state on (the same numbers
in float and in int8). The model's configuration, alphabet and the author fields travel in the file's
metadata. The float graph comes from torch's TorchScript-based exporter (``dynamo=False``, opset 17: the
dynamo exporter of torch 2.13 fixes the frame count after the LSTM); the int8 graph is written by
``quantization`` (int8 weights, activations quantized per row, as DeepSpeech's TFLite runtime).

Each file is checked against the torch model on real speech before it is kept: float log-probs to 1e-3;
int8 by what quantization can change, the frame posteriors where the float model is confident (argmax
agreement and the mean total-variation distance |Δp|), so a scrambled or mis-scaled int8 file is refused
whether or not the model can transcribe the check audio.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harken import __version__, audio, decoder, features, quantization
from harken import config as config_module
from harken.checkpoint import LoadedModel
from harken.config import ExportConfig, FeatureConfig
from harken.inference import FORMAT_VERSION, METADATA_KEY
from harken.model import DeepSpeech

INPUTS = ("windows", "h0", "c0")
OUTPUTS = ("log_probs", "hn", "cn")
CONFIDENT = 0.9  # the int8 check compares frames where the float model gives one class this probability
MIN_AGREEMENT = 0.97  # of those frames' argmax, int8 against float
MAX_SHIFT = 0.01  # mean total-variation distance (half the summed |Δp|) over those frames
MIN_CONFIDENT = 20  # fewer confident frames (an untrained model): the distance over all frames decides
MAX_CLASS_SHIFT = 0.5  # the median |Δ log-prob| of every class over the frames: a class the audio never
# gives (a letter the check sentence lacks) still has its log-prob computed on every frame


class ExportError(RuntimeError):
    """An export that failed or did not match the model it came from."""


class _Graph(nn.Module):
    """The acoustic model with its LSTM state as explicit inputs and outputs."""

    def __init__(self, model: DeepSpeech) -> None:
        super().__init__()
        self.model = model

    def forward(self, windows: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        log_probs, _, (hn, cn) = self.model(windows, None, (h0, c0))
        return log_probs, hn, cn


@dataclass
class ExportResult:
    path: Path
    parity: str  # one line: what the check compared and found


def metadata(loaded: LoadedModel, options: ExportConfig, scheme: str | None = None) -> dict[str, str]:
    """What an exported file says about itself (ONNX metadata_props; values are strings)."""
    dims = loaded.dims
    model = dims.model_config(loaded.run.model if loaded.run is not None else None)  # dropout: as it was
    info = {
        "format_version": FORMAT_VERSION,
        # no local paths or data: the front end and the ModelConfig, the layout exports always had
        "config": {"features": config_module.to_dict(dims.features), "model": config_module.to_dict(model)},
        "alphabet": loaded.alphabet.serialize(),
        "harken_version": __version__,
        "source": loaded.path.name,
        "author_id": options.export_author_id,
        "model_name": options.export_model_name,
        "model_version": options.export_model_version,
        "contact_info": options.export_contact_info,
        "license": options.export_license,
        "language": options.export_language,
        "description": options.export_description,
    }
    info["quantization"] = scheme or "none"  # files without it come from before the per-row int8 graph
    return {METADATA_KEY: json.dumps(info, ensure_ascii=False)}


def _stamp(proto: Any, loaded: LoadedModel, options: ExportConfig, scheme: str | None = None) -> None:
    for key, value in metadata(loaded, options, scheme).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name, proto.producer_version = "harken", __version__


def _export_float(loaded: LoadedModel, path: Path, options: ExportConfig) -> None:
    import onnx

    model = loaded.model.float().cpu().eval()
    if model.bidirectional:
        raise ExportError("a bidirectional model cannot stream; export supports unidirectional models only")
    hidden, n_input = model.n_hidden, model.n_input
    example = (torch.zeros(1, 16, n_input), torch.zeros(1, 1, hidden), torch.zeros(1, 1, hidden))
    dynamic = {"windows": {0: "batch", 1: "time"}, "h0": {1: "batch"}, "c0": {1: "batch"},
               "log_probs": {0: "batch", 1: "time"}, "hn": {1: "batch"}, "cn": {1: "batch"}}  # fmt: skip
    graph = _Graph(model).eval()  # the exporter restores the wrapper's mode afterwards: keep it eval
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about the LSTM's batch size: h0/c0 are inputs here
        torch.onnx.export(
            graph, example, str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
            dynamic_axes=dynamic, opset_version=17, dynamo=False, do_constant_folding=True,
        )  # fmt: skip
    proto = onnx.load(str(path))
    _stamp(proto, loaded, options)
    onnx.save(proto, str(path))


def _export_int8(loaded: LoadedModel, path: Path, options: ExportConfig) -> None:
    import onnx

    proto = quantization.int8_model(loaded.model, loaded.dims.features.n_mfcc)
    _stamp(proto, loaded, options, quantization.SCHEME)
    onnx.save(proto, str(path))


def check_audio(cfg: FeatureConfig, path: Path | None = None) -> np.ndarray:
    """Real speech for the parity check: the given file, else a sentence spoken by espeak-ng."""
    sample_rate = cfg.audio_sample_rate
    if path is None:
        from harken.audio import Synthesizer

        speech = "please turn the kitchen light on and set the timer to five"
        pcm, rate = Synthesizer().speak(speech, "en-us+m3")
        return audio.resample(audio.from_pcm16(pcm), rate, sample_rate)
    if path.is_dir():
        raise ExportError(f"--check_audio {path}: a folder, not an audio file")
    samples = audio.read(path, sample_rate)
    if features.n_frames(len(samples), cfg) == 0:
        raise ExportError(f"--check_audio {path}: shorter than one {cfg.feature_win_len} ms feature window")
    if not np.isfinite(samples).all():
        raise ExportError(f"--check_audio {path}: holds samples that are not numbers (NaN or infinite)")
    return samples


@dataclass(frozen=True)
class Agreement:
    """How an int8 model's frame posteriors compare with the float model's on the check audio."""

    frames: int
    confident: int  # frames where the float model gives one class at least CONFIDENT
    agreement: float  # share of the confident frames whose argmax is the float model's
    shift: float  # mean total-variation distance over the confident frames (all frames if too few)
    class_shift: float = 0.0  # the largest per-class median |Δ log-prob| over all frames
    worst_class: str = ""  # ... that class

    def failure(self) -> str | None:
        """What is wrong, in one line, or None."""
        if not np.isfinite(self.shift):
            return "the int8 model gives non-finite log-probs"
        if self.confident >= MIN_CONFIDENT and self.agreement < MIN_AGREEMENT:
            return (f"int8 picks the float model's class on {self.agreement:.1%} of its {self.confident} "
                    f"confident frames (at least {MIN_AGREEMENT:.0%})")  # fmt: skip
        if self.shift > MAX_SHIFT:
            shift = f"{self.shift:.3f} (mean |Δp|; limit {MAX_SHIFT})"
            if self.confident < MIN_CONFIDENT:
                return (f"int8 frame posteriors are {shift} from the float model's over all frames: only "
                        f"{self.confident} frames are confident (use --check_audio with speech in the "
                        "model's language)")  # fmt: skip
            return f"int8 frame posteriors are {shift} from the float model's"
        if self.class_shift > MAX_CLASS_SHIFT:
            return (f"int8 moves the log-probability of {self.worst_class} by {self.class_shift:.2f} on the "
                    f"median frame (limit {MAX_CLASS_SHIFT})")  # fmt: skip
        return None

    def __str__(self) -> str:
        classes = f"; each class's log-prob within {self.class_shift:.2f} on the median frame"
        if self.confident < MIN_CONFIDENT:
            return f"mean |Δp| {self.shift:.4f} over all {self.frames} frames (few confident ones){classes}"
        frames = f"over the {self.confident} of {self.frames} frames where the float model is confident"
        return f"argmax agreement {self.agreement:.1%} and mean |Δp| {self.shift:.4f} {frames}{classes}"


def agreement(reference: np.ndarray, ours: np.ndarray, labels: list[str] | None = None) -> Agreement:
    """reference, ours: log_probs [time, n_classes] of the float and the int8 model; ``labels``: the
    classes' names (the alphabet, then the blank)."""
    expected, got = np.exp(reference.astype(np.float64)), np.exp(ours.astype(np.float64))
    distance = 0.5 * np.abs(expected - got).sum(axis=-1)  # [time], in [0, 1]
    confident = expected.max(axis=-1) >= CONFIDENT  # [time]
    count = int(confident.sum())
    chosen = confident if count >= MIN_CONFIDENT else np.ones_like(confident)
    same = ours.argmax(-1) == reference.argmax(-1)  # [time]
    rate = float(same[confident].mean()) if count else 1.0
    shift = float(distance[chosen].mean()) if np.isfinite(ours).all() else float("nan")
    per_class = np.median(np.abs(ours.astype(np.float64) - reference), axis=0)  # [n_classes]
    worst = int(per_class.argmax())
    name = repr(labels[worst]) if labels and worst < len(labels) else f"class {worst}"
    return Agreement(len(reference), count, rate, shift, float(per_class[worst]), name)


def parity(
    loaded: LoadedModel,
    path: Path,
    samples: np.ndarray,
    quantized: bool,
    enforce: bool = True,
    name: Path | None = None,
) -> str:
    """Compare the ONNX file with the torch model on ``samples``; raise ExportError when they differ.

    Float: max |Δ log-prob| must be under 1e-3. int8: on the frames where the float model is confident,
    the argmax must agree on 97 % and the posteriors move by at most 0.01 on average, and no class's
    log-prob may move by more than 0.5 on the median frame (see ``Agreement``). Errors name ``name``
    (the file being written) rather than ``path`` (where it is checked).
    """
    name = name or path
    import onnxruntime

    cfg = loaded.dims.features
    windows = features.utterance_windows(torch.from_numpy(samples), cfg)  # [1, time, n_input]
    with torch.inference_mode():
        reference, _, _ = loaded.model.float().cpu().eval()(windows)  # [1, time, n_classes]
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    zeros = np.zeros((1, 1, loaded.model.n_hidden), np.float32)
    ours = session.run(["log_probs"], {"windows": windows.numpy(), "h0": zeros, "c0": zeros})[0]
    if quantized:
        labels = [*loaded.alphabet.symbols, "the blank"]
        found = agreement(reference[0].numpy(), ours[0], labels)
        problem = found.failure()
        if enforce and problem is not None:
            raise ExportError(f"{name}: {problem}")
        check = "int8 check" if problem is None else f"int8 check FAILED, not enforced ({problem})"
        return f"{check}: {found}"
    frames = reference.shape[1]
    expected = decoder.greedy(reference[0], frames, loaded.alphabet).text
    got = decoder.greedy(torch.from_numpy(ours[0]), frames, loaded.alphabet).text
    delta = float(np.abs(ours - reference.numpy()).max())
    if not np.isfinite(delta) or delta > 1e-3:
        raise ExportError(f"{name}: ONNX log-probs differ from torch's by {delta:.2e} (limit 1e-3)")
    same = "identical" if expected == got else "different"
    return f"float parity: max |Δ log-prob| {delta:.1e} over {frames} frames; transcripts {same}"


def export(
    loaded: LoadedModel, options: ExportConfig, check_path: Path | None = None, enforce_int8: bool = True
) -> list[ExportResult]:
    """Write model.onnx (and model.int8.onnx with --quantize int8) into export_dir, each checked.
    ``enforce_int8=False`` (benchmarks, which measure accuracy themselves) reports the int8 check's figure
    without refusing the file."""
    directory = Path(options.export_dir)
    samples = check_audio(loaded.dims.features, check_path)
    directory.mkdir(parents=True, exist_ok=True)
    float_path, int8_path = directory / "model.onnx", directory / "model.int8.onnx"
    temporary = directory / ".model.onnx.tmp"
    try:
        _export_float(loaded, temporary, options)
        message = parity(loaded, temporary, samples, quantized=False, name=float_path)
        temporary.replace(float_path)
    finally:
        temporary.unlink(missing_ok=True)
    results = [ExportResult(float_path, message)]
    if options.quantize == "int8":
        temporary = directory / ".model.int8.onnx.tmp"
        try:
            _export_int8(loaded, temporary, options)
            message = parity(loaded, temporary, samples, True, enforce_int8, name=int8_path)
        except ExportError as error:
            if int8_path.exists():  # from an earlier export: it does not belong beside the new model.onnx
                int8_path.unlink()
                raise ExportError(f"{error} (the earlier {int8_path.name} there is removed)") from None
            raise
        else:
            temporary.replace(int8_path)
        finally:
            temporary.unlink(missing_ok=True)
        results.append(ExportResult(int8_path, message))
    return results


def read_metadata(path: Path) -> dict[str, Any]:
    """The harken metadata of an exported file (config, alphabet, author fields)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            info: dict[str, Any] = json.loads(entry.value)
            return info
    raise ExportError(f"{path}: an ONNX file without harken metadata (not exported by harken export)")
