"""``Model`` and ``Stream``: DeepSpeech's inference API in plain Python, over onnxruntime or torch.

    from harken import Model
    model = Model("export/model.onnx")            # or a checkpoint directory, a .pt or a .tflite
    text = model.stt(pcm16)                        # 16-bit samples at model.sample_rate
    stream = model.create_stream()
    stream.feed_audio_content(chunk)               # any chunk size
    partial = stream.intermediate_decode()
    final = stream.finish_stream()

    for stream, chunk in zip(streams, chunks):     # many live streams, one model call a step
        stream.buffer_audio(chunk)
    model.step_streams(streams)

A stream computes each MFCC frame once its window of samples has arrived, each context window once its
future frames have, and runs the acoustic model on what is new with the LSTM state carried over, so its
final result is the whole file's, exactly (float models); a bidirectional checkpoint is decoded when the
stream finishes, so it gives no partial results.

``stt`` on a long utterance (8 s or more) cuts it at its quietest frames into up to ``batch_segments``
stretches of 4 s or more on average and runs them side by side through the LSTM, each started one second
early so its state has settled: the LSTM's recurrent weights are then read once per step for all of them,
where one pass reads them once per frame (they dominate the time). ``batch_segments=1`` runs one pass, as a
stream does.

Decoding is DeepSpeech's: a CTC beam search (width 500 with a scorer, 16 without, unless ``set_beam_width``
says otherwise; 1 without a scorer is greedy), with a KenLM scorer once ``enable_scorer`` is called, and
hot words and phrases, with or without a scorer (boosted only where the whole phrase is said)::

    model.enable_scorer("my.scorer"); model.set_scorer_alpha_beta(0.93, 1.18)
    model.add_hot_word("harken", 7.5); model.add_hot_word("fiona walker", 6.0)
    candidates = model.stt_with_metadata(pcm16, num_results=3).transcripts
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from harken import audio, checkpoint, decoder, features, quantization
from harken.alphabet import Alphabet
from harken.config import DecoderConfig
from harken.decoder import BeamSettings, Decoder, settings_from
from harken.dims import ModelDims
from harken.phrases import checked
from harken.scorer import Scorer

METADATA_KEY = "harken"  # the ONNX file's metadata entry harken writes (export.py) and reads
FORMAT_VERSION = 1  # of the exported graph's interface; a reader refuses files newer than it knows

State = tuple[np.ndarray, np.ndarray]  # (h, c), each [directions, batch, n_hidden]
SEGMENT_FRAMES = 200  # side-by-side stretches are 4 s (of 20 ms frames) or more on average ...
WARMUP_FRAMES = 50  # ... and starts 1 s before its cut, its outputs there dropped


class InferenceError(ValueError):
    """A model that cannot be loaded or audio that cannot be used; one line."""


@dataclass(frozen=True)
class TokenMetadata:
    text: str
    timestep: int  # the frame at which the character was emitted
    start_time: float  # seconds


@dataclass(frozen=True)
class CandidateTranscript:
    tokens: tuple[TokenMetadata, ...]
    confidence: float  # sum of the chosen frames' log-probabilities

    @property
    def text(self) -> str:
        return "".join(token.text for token in self.tokens)


@dataclass(frozen=True)
class Metadata:
    transcripts: tuple[CandidateTranscript, ...]


class Backend(Protocol):
    n_hidden: int
    directions: int  # 2 for a bidirectional model: it needs the whole utterance, so a stream waits

    def __call__(self, windows: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """windows [batch, time, n_input] -> log_probs [batch, time, n_classes] and the new state."""
        ...


class OnnxBackend:
    def __init__(self, path: Path, threads: int | None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            raise InferenceError(f"{path}: not a loadable ONNX model ({type(error).__name__})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        info = meta.get(METADATA_KEY)
        if info is None:
            raise InferenceError(
                f"{path}: an ONNX file without harken metadata (export it with harken export)"
            )
        self.metadata: dict[str, Any] = json.loads(info)
        version = int(self.metadata.get("format_version", 1))
        if version > FORMAT_VERSION:
            raise InferenceError(
                f"{path}: exported by harken {self.metadata.get('harken_version', '?')} in format {version}; "
                f"this harken reads format {FORMAT_VERSION} (upgrade harken)"
            )
        if self.metadata.get("quantization") == quantization.SCHEME and quantization.signed_products_exact():
            self.session = self._signed(path, options)
        self.n_hidden = int(self.session.get_inputs()[1].shape[2])
        classes = self.session.get_outputs()[0].shape[2]
        self.n_classes = classes if isinstance(classes, int) else 0  # only for an empty call's shape
        self.directions = 1  # harken export refuses bidirectional models
        if meta.get("onnx.infer") == "onnxruntime.quant":  # quantize_dynamic: what harken export used before
            warnings.warn(
                f"{path}: int8 from onnxruntime's dynamic quantization, as an earlier harken export wrote it "
                "(one activation scale per call, inexact on CPUs without AVX-512 VNNI); export it again "
                "with harken export --quantize int8",
                stacklevel=3,
            )

    @staticmethod
    def _signed(path: Path, options: Any) -> Any:
        """The int8 graph with int8 weights in every product: the same integers, a faster kernel on CPUs
        that multiply uint8 by int8 exactly (AVX-512 VNNI: 1.7x for 64 stream steps at once)."""
        import onnx
        import onnxruntime

        proto = onnx.load(str(path))
        quantization.with_signed_weights(proto)
        return onnxruntime.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, windows: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        if windows.shape[1] == 0:  # the int8 graph's Scan does not take zero frames
            return np.zeros((windows.shape[0], 0, self.n_classes), np.float32), state
        log_probs, hn, cn = self.session.run(None, {"windows": windows, "h0": state[0], "c0": state[1]})
        return log_probs, (hn, cn)


class TorchBackend:
    def __init__(self, loaded: checkpoint.LoadedModel) -> None:
        self.model = loaded.model.eval()
        self.n_hidden = loaded.model.n_hidden
        self.directions = 2 if loaded.model.bidirectional else 1
        self.device = next(loaded.model.parameters()).device

    def __call__(self, windows: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        h0, c0 = (torch.from_numpy(s).to(self.device) for s in state)
        with torch.inference_mode():
            log_probs, _, (hn, cn) = self.model(torch.from_numpy(windows).to(self.device), None, (h0, c0))
        return log_probs.cpu().numpy(), (hn.cpu().numpy(), cn.cpu().numpy())


class Model:
    """A speech-to-text model: an exported .onnx, a checkpoint directory, a .pt or a DeepSpeech .tflite."""

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        device: str = "cpu",
        load_evaluate: str = "auto",
        batch_segments: int = 4,
    ) -> None:
        """``load_evaluate`` picks the checkpoint of a directory: auto (best, else last), best or last;
        ``batch_segments``: how many stretches of a long utterance ``stt`` runs side by side (1: one pass)."""
        if batch_segments < 1:
            raise InferenceError(f"batch_segments must be at least 1, got {batch_segments}")
        self.batch_segments = batch_segments
        path = Path(path)
        self.backend: Backend
        self.dims: ModelDims  # what the model takes (its front end), its geometry and its alphabet
        if path.suffix.lower() == ".onnx":
            if not path.is_file():
                raise InferenceError(f"{path}: no such file")
            onnx_backend = OnnxBackend(path, threads)
            meta = onnx_backend.metadata
            self.dims = ModelDims.from_stored_config(meta["config"], meta["alphabet"])
            self.backend = onnx_backend
        else:
            if threads:
                torch.set_num_threads(threads)  # torch has one, process-wide, setting
            if path.suffix.lower() in (".pt", ".tflite"):
                loaded = checkpoint.load_file(path, device)
            else:
                loaded = checkpoint.load_model(path, load_evaluate, device)
            self.dims = loaded.dims
            self.backend = TorchBackend(loaded)
        self._scorer: Scorer | None = None
        self._settings = BeamSettings()
        self._decoder: Decoder | None = None

    # --- decoding: DeepSpeech's Model methods ---------------------------------------------------------

    def set_decoder(self, config: DecoderConfig) -> None:
        """Apply the decoder options (``--scorer``, ``--beam_width``, ``--lm_alpha`` ...) in one go."""
        settings = settings_from(config)
        scorer = Scorer(config.scorer_path, self.alphabet) if config.scorer_path else None
        self._use(settings, scorer)

    def _use(self, settings: BeamSettings, scorer: Scorer | None) -> None:
        self._decoder = Decoder(self.alphabet, settings, scorer)  # checks hot words against the scorer
        self._settings, self._scorer = settings, scorer

    def decoder(self) -> Decoder:
        """The decoder new streams use (rebuilt when a setting changes)."""
        if self._decoder is None:
            self._decoder = Decoder(self.alphabet, self._settings, self._scorer)
        return self._decoder

    def enable_scorer(self, path: str | Path) -> None:
        self._use(self._settings, Scorer(path, self.alphabet))

    def disable_scorer(self) -> None:
        self._use(self._settings, None)  # hot words stay: the search without a scorer boosts them too

    def set_scorer_alpha_beta(self, alpha: float, beta: float) -> None:
        if self._scorer is None:
            raise InferenceError("no scorer enabled: call enable_scorer first")
        self._use(dataclasses.replace(self._settings, alpha=alpha, beta=beta), self._scorer)

    @property
    def beam_width(self) -> int:
        return self._settings.width(self._scorer)

    def set_beam_width(self, beam_width: int) -> None:
        self._use(dataclasses.replace(self._settings, beam_width=beam_width), self._scorer)

    @property
    def hot_words(self) -> dict[str, float]:
        return dict(self._settings.hot_words)

    def add_hot_word(self, word: str, boost: float) -> None:
        """Make ``word`` likelier (boost > 0) or less likely (boost < 0). A phrase of several words
        ("fiona walker") is boosted only where it is whole; the boost is per word, natural log (weighed
        by alpha with a scorer); with a scorer, words outside its vocabulary become spellable."""
        self.set_hot_words({**self._settings.hot_words, word: boost})

    def set_hot_words(self, hot_words: Mapping[str, float]) -> None:
        """Replace every hot word / phrase at once (``{"fiona walker": 6.0}``): one decoder built, not one
        per phrase as with ``add_hot_word``."""
        try:
            normal = checked(hot_words)
        except (ValueError, AttributeError) as error:
            raise InferenceError(str(error)) from None
        self._use(dataclasses.replace(self._settings, hot_words=normal), self._scorer)

    def erase_hot_word(self, word: str) -> None:
        word = " ".join(str(word).split())
        if word not in self._settings.hot_words:
            raise InferenceError(f"{word!r} is not a hot word")
        rest = {w: b for w, b in self._settings.hot_words.items() if w != word}
        self._use(dataclasses.replace(self._settings, hot_words=rest), self._scorer)

    def clear_hot_words(self) -> None:
        self._use(dataclasses.replace(self._settings, hot_words={}), self._scorer)

    @property
    def alphabet(self) -> Alphabet:
        return self.dims.alphabet

    @property
    def sample_rate(self) -> int:
        return self.dims.features.audio_sample_rate

    def create_stream(self) -> Stream:
        return Stream(self)

    def step_streams(self, streams: Sequence[Stream], final: bool = False, max_batch: int = 64) -> int:
        """Run the model once for many streams' pending audio (fed with ``Stream.buffer_audio``), in
        batched calls: see ``step_streams``. Returns the number of model calls."""
        if any(stream.model is not self for stream in streams):
            raise InferenceError("step_streams takes streams of this model only")
        return step_streams(streams, final, max_batch)

    def stt(self, pcm16: bytes | np.ndarray) -> str:
        """The transcript of a whole utterance (16-bit samples at ``sample_rate``)."""
        return self.stt_with_metadata(pcm16).transcripts[0].text

    def stt_with_metadata(self, pcm16: bytes | np.ndarray, num_results: int = 1) -> Metadata:
        stream = self.create_stream()
        samples = _floats(pcm16)
        cfg = self.dims.features
        count = features.n_frames(len(samples), cfg)
        assert isinstance(count, int)
        pieces = min(self.batch_segments, count // SEGMENT_FRAMES)
        if pieces < 2 or self.backend.directions > 1:
            stream.feed_audio_content(samples)
            return stream.finish_stream_with_metadata(num_results)
        mfcc = features.mfcc(torch.from_numpy(samples), cfg)  # [time, n_mfcc]
        normal = features.normalize(mfcc.unsqueeze(0), cfg)  # [1, time, n_mfcc]
        windows = features.context_windows(normal, cfg.n_context).numpy()  # [1, time, n_input]
        cuts = quiet_cuts(mfcc[:, 0].numpy(), pieces)
        return stream.finish_with(side_by_side(self.backend, windows, cuts, WARMUP_FRAMES), num_results)


def quiet_cuts(energy: np.ndarray, pieces: int) -> list[int]:
    """Frame bounds [0, ..., time] cutting ``energy`` [time] into ``pieces`` stretches of near-equal length,
    each cut at the quietest frame (9-frame average) within a quarter of a stretch of the even cut."""
    length = len(energy) / pieces
    smooth = np.convolve(energy, np.ones(9) / 9, mode="same")
    reach = int(length / 4)
    cuts = [0]
    for k in range(1, pieces):
        low = round(k * length) - reach
        cuts.append(low + int(np.argmin(smooth[low : low + 2 * reach + 1])))
    return [*cuts, len(energy)]


def side_by_side(backend: Backend, windows: np.ndarray, cuts: list[int], warmup: int) -> np.ndarray:
    """windows [1, time, n_input] -> log_probs [time, n_classes]: the stretches between ``cuts`` run as one
    batch from a zero state, each from ``warmup`` frames before its cut (those outputs dropped)."""
    starts = [max(0, cut - warmup) for cut in cuts[:-1]]
    span = max(end - start for start, end in zip(starts, cuts[1:], strict=True))
    batch = np.zeros((len(starts), span, windows.shape[2]), np.float32)  # [pieces, span, n_input]
    for row, (start, end) in enumerate(zip(starts, cuts[1:], strict=True)):
        batch[row, : end - start] = windows[0, start:end]  # the zeros after a short stretch come after it
    zeros = np.zeros((backend.directions, len(starts), backend.n_hidden), np.float32)
    log_probs, _ = backend(batch, (zeros, zeros.copy()))  # [pieces, span, n_classes]
    kept = [log_probs[row, cut - start : end - start] for row, (start, cut, end) in
            enumerate(zip(starts, cuts[:-1], cuts[1:], strict=True))]  # fmt: skip
    return np.concatenate(kept)


def _floats(pcm16: bytes | np.ndarray) -> np.ndarray:
    """16-bit PCM (bytes or int16 array) or float samples in [-1, 1] -> float32 [n]."""
    if isinstance(pcm16, bytes | bytearray | memoryview):
        if len(pcm16) % 2:
            raise InferenceError("16-bit PCM needs an even number of bytes")
        return audio.from_pcm16(bytes(pcm16))
    array = np.asarray(pcm16)
    if array.ndim != 1:
        raise InferenceError(f"expected mono samples (one dimension), got shape {array.shape}")
    if array.dtype == np.int16:
        return audio.from_pcm16(array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InferenceError("the audio holds samples that are not numbers (NaN or infinite)")
        return array.astype(np.float32)
    raise InferenceError(f"expected int16 or float samples, got {array.dtype}")


class Stream:
    """Incremental recognition: feed audio as it comes, read partial results, finish for the final one."""

    def __init__(self, model: Model) -> None:
        self.model = model
        cfg = model.dims.features
        self._cfg = cfg
        self._samples = np.zeros(0, np.float32)  # not yet turned into frames; starts at a frame boundary
        self._frames = np.zeros((cfg.n_context, cfg.n_mfcc), np.float32)  # left padding, then model frames
        self._normalize = features.RunningMean(cfg)  # model frames: normalised as they come
        zeros = np.zeros((model.backend.directions, 1, model.backend.n_hidden), np.float32)
        self._state: State = (zeros, zeros.copy())
        self._search = model.decoder().stream()
        self._finished = False
        self._flushed = False  # the end's windows have been handed out: no more audio

    def feed_audio_content(self, pcm16: bytes | np.ndarray) -> None:
        """Take more audio and run the model on what it completes."""
        self.buffer_audio(pcm16)
        self._run(final=False)

    def step(self) -> None:
        """Run the model on the windows the audio buffered so far completes (``feed_audio_content`` does
        this itself)."""
        self._run(final=False)

    def buffer_audio(self, pcm16: bytes | np.ndarray) -> None:
        """Take more audio, computing its frames but not running the model: ``Model.step_streams`` then
        runs it for many streams at once."""
        if self._finished or self._flushed:
            raise InferenceError("the stream is finished; create a new one")
        self._samples = np.concatenate([self._samples, _floats(pcm16)])
        count = features.n_frames(len(self._samples), self._cfg)
        assert isinstance(count, int)
        if count == 0:
            return
        used = (count - 1) * self._cfg.step_samples + self._cfg.window_samples
        raw = features.mfcc(torch.from_numpy(self._samples[:used]), self._cfg)  # [count, n_mfcc]
        mfcc = self._normalize(raw).numpy()
        self._samples = self._samples[count * self._cfg.step_samples :]
        self._frames = np.concatenate([self._frames, mfcc])

    def _run(self, final: bool) -> None:
        """Run the model on every window whose future context has arrived (all of them when final)."""
        windows = self.take_windows(final)
        if windows is not None:
            log_probs, state = self.model.backend(windows[np.newaxis], self.state)
            self.accept_output(log_probs[0], state)

    @property
    def state(self) -> State:
        """The recurrent state (h, c), each [directions, 1, n_hidden], after the windows run so far."""
        return self._state

    def take_windows(self, final: bool = False) -> np.ndarray | None:
        """The context windows [ready, n_input] whose future frames have arrived (all of them, the end
        padded, when ``final``: the stream then takes no more audio), handed out once; None when there
        are none yet. Their model output goes back through ``accept_output``."""
        context = self._cfg.n_context
        if self._flushed or (self.model.backend.directions > 1 and not final):
            return None  # a bidirectional model reads the utterance backwards too: run it when complete
        if final:
            self._flushed = True
            self._frames = np.concatenate([self._frames, np.zeros((context, self._cfg.n_mfcc), np.float32)])
        ready = len(self._frames) - 2 * context  # windows whose 2 * context + 1 frames are all here
        if ready <= 0:
            return None
        frames = torch.from_numpy(self._frames).unsqueeze(0)  # [1, frames, n_mfcc]
        windows = features.context_windows(frames, context)[0, context : context + ready]  # [ready, n_input]
        self._frames = self._frames[ready:]  # keep the 2 * context frames the next windows still need
        return np.ascontiguousarray(windows.numpy())

    def accept_output(self, log_probs: np.ndarray, state: State) -> None:
        """The model's output for the windows ``take_windows`` gave: log_probs [ready, n_classes] (decoded
        once, as they come) and the state after them."""
        self._state = state
        self._accept(log_probs)

    def _accept(self, log_probs: np.ndarray) -> None:
        """New frames' log-probs [time, n_classes]: decoded once, as they come."""
        self._search.extend(torch.from_numpy(log_probs))

    def _metadata(self, candidates: list[decoder.Decoded]) -> Metadata:
        seconds = self._cfg.feature_win_step / 1000.0
        transcripts = []
        for candidate in candidates:
            steps = candidate.timesteps
            tokens = tuple(
                TokenMetadata(text, steps[i], round(steps[i] * seconds, 3))
                for text, i in self.model.alphabet.tokens(candidate.labels)
            )
            transcripts.append(CandidateTranscript(tokens, candidate.confidence))
        return Metadata(tuple(transcripts))

    def intermediate_decode(self) -> str:
        return self.intermediate_decode_with_metadata().transcripts[0].text

    def intermediate_decode_with_metadata(self, num_results: int = 1) -> Metadata:
        """The best transcript so far (a beam search's candidates are only ranked when it finishes)."""
        if self._finished:
            return self._metadata(self._search.finish(1))
        return self._metadata([self._search.result()])

    def finish_stream(self) -> str:
        return self.finish_stream_with_metadata().transcripts[0].text

    def finish_with(self, log_probs: np.ndarray, num_results: int) -> Metadata:
        """The final transcript of a fresh stream given its whole utterance's log_probs [time, n_classes]."""
        if num_results < 1:
            raise InferenceError(f"num_results must be at least 1, got {num_results}")
        if self._finished or len(self._samples) or len(self._frames) > self._cfg.n_context:
            raise InferenceError("finish_with takes a fresh stream")
        self._finished = True
        self._accept(log_probs)
        return self._metadata(self._search.finish(num_results))

    def finish_stream_with_metadata(self, num_results: int = 1) -> Metadata:
        """The final transcript: the ``num_results`` best distinct candidates, best first."""
        if num_results < 1:
            raise InferenceError(f"num_results must be at least 1, got {num_results}")
        if not self._finished:
            self._run(final=True)
            self._finished = True
        return self._metadata(self._search.finish(num_results))


def step_streams(
    streams: Sequence[Stream],
    final: bool = False,
    max_batch: int = 64,
    failed: dict[int, Exception] | None = None,
) -> int:
    """Run the model once for the pending windows of many streams of one model: streams with the same
    number of new windows go through the model together (their LSTM states stacked in, split out), up
    to ``max_batch`` at a time, so the recurrent weights are read once per step for all of them. Each
    stream's output equals what it would get alone (float models; int8 rows are quantized one at a
    time, so batching changes nothing there either). ``final``: the streams' last windows (they then
    take no more audio; ``finish_stream`` gives their finals). With ``failed``, what goes wrong with a
    stream is recorded there under its index instead of raised, and the others go on. Returns the
    number of model calls."""
    if max_batch < 1:
        raise InferenceError(f"max_batch must be at least 1, got {max_batch}")
    groups: dict[tuple[int, int], list[tuple[int, Stream, np.ndarray]]] = {}
    for index, stream in enumerate(streams):
        try:
            windows = stream.take_windows(final)
        except Exception as error:
            if failed is None:
                raise
            failed[index] = error
            continue
        if windows is not None:
            key = (id(stream.model.backend), len(windows))
            groups.setdefault(key, []).append((index, stream, windows))
    calls = 0
    for group in groups.values():
        for start in range(0, len(group), max_batch):
            _step_together(group[start : start + max_batch], failed)
            calls += 1
    return calls


def _step_together(chunk: list[tuple[int, Stream, np.ndarray]], failed: dict[int, Exception] | None) -> None:
    """One model call for streams with as many new windows each, their outputs handed back."""
    try:
        windows = np.stack([w for _, _, w in chunk])  # [batch, ready, n_input]
        h0 = np.concatenate([s.state[0] for _, s, _ in chunk], axis=1)  # [directions, batch, n_hidden]
        c0 = np.concatenate([s.state[1] for _, s, _ in chunk], axis=1)
        log_probs, (hn, cn) = chunk[0][1].model.backend(windows, (h0, c0))  # [batch, ready, n_classes]
    except Exception as error:
        if failed is None:
            raise
        failed.update((index, error) for index, _, _ in chunk)
        return
    for row, (index, stream, _) in enumerate(chunk):
        try:
            stream.accept_output(log_probs[row], (hn[:, row : row + 1], cn[:, row : row + 1]))
        except Exception as error:
            if failed is None:
                raise
            failed[index] = error
