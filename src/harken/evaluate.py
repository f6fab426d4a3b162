"""Run a model over a test set: per-sample CTC loss and transcripts, WER / CER, DeepSpeech's report."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from harken import checkpoint, data, decoder, features, manifest, metrics
from harken.alphabet import Alphabet
from harken.checkpoint import LoadedModel
from harken.config import Config, FeatureConfig
from harken.data import Batch, Split
from harken.distributed import World, all_gather, from_main, shard
from harken.manifest import Sample
from harken.model import DeepSpeech, choose_device
from harken.storage import atomic_write
from harken.summary import ProgressBar


@dataclass
class SampleResult:
    wav_filename: str
    src: str  # the reference transcript
    res: str  # the model's transcript
    loss: float
    wer: float
    cer: float
    word_errors: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0


@dataclass
class Report:
    name: str
    samples: list[SampleResult] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # one line per sample whose audio could not be read

    @property
    def wer(self) -> float:
        words = sum(s.words for s in self.samples)
        errors = sum(s.word_errors for s in self.samples)
        return metrics.Errors(errors, words).rate

    @property
    def cer(self) -> float:
        chars = sum(s.chars for s in self.samples)
        errors = sum(s.char_errors for s in self.samples)
        return metrics.Errors(errors, chars).rate

    @property
    def loss(self) -> float:
        return sum(s.loss for s in self.samples) / len(self.samples) if self.samples else math.nan

    def to_json(self) -> dict[str, object]:
        return {
            "test_files": self.name,
            "wer": self.wer,
            "cer": self.cer,
            "loss": self.loss,
            "samples": [asdict(s) for s in self.samples],
            "failed": self.failed,
        }


def batch_losses(
    model: DeepSpeech, batch: Batch, config: FeatureConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample CTC losses of a batch on the model's device.

    Returns losses [batch], log_probs [batch, time, n_classes], lengths [batch].
    """
    windows = features.model_input(batch.frames(), batch.lengths, config)  # [batch, time, n_input]
    log_probs, lengths, _ = model(windows, batch.lengths)
    losses = F.ctc_loss(
        log_probs.transpose(0, 1),  # [time, batch, n_classes]
        batch.labels,
        lengths,
        batch.label_lengths,
        blank=model.n_classes - 1,
        reduction="none",
        zero_infinity=True,
    )
    return losses, log_probs, lengths


def run(
    model: DeepSpeech,
    batches: Iterable[Batch],
    samples: Sequence[Sample],
    alphabet: Alphabet,
    feature_config: FeatureConfig,
    device: torch.device,
    name: str = "",
    on_batch: Callable[[int], None] | None = None,
    text_decoder: decoder.Decoder | None = None,
) -> Report:
    """Loss and transcript of every sample the batches hold (greedy unless ``text_decoder`` is given)."""
    report = Report(name)
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            report.failed.extend(reason for _, reason in batch.failed)
            if len(batch):
                batch = batch.to(device)
                losses, log_probs, lengths = batch_losses(model, batch, feature_config)
                if text_decoder is None:
                    decoded = decoder.greedy_batch(log_probs, lengths, alphabet)
                else:
                    decoded = text_decoder.decode_batch(log_probs, lengths)
                for row, index in enumerate(batch.indices):
                    report.samples.append(_result(samples[index], decoded[row].text, float(losses[row])))
            if on_batch is not None:
                on_batch(len(batch) + len(batch.failed))
    return report


def run_shard(
    model: DeepSpeech,
    loader: Iterable[Batch],
    split: Split,
    alphabet: Alphabet,
    feature_config: FeatureConfig,
    world: World,
    title: str,
    progress: bool = True,
    text_decoder: decoder.Decoder | None = None,
) -> Report:
    """``run`` over this process's shard of ``split`` (what ``loader`` yields: a ``data.BatchOrder`` with
    this process's rank), then the results of every process gathered into one report, which every process
    gets. In a world of one this is ``run`` with a progress bar."""
    indices: list[int] = []
    total = sum(len(shard(batch, world.rank, world.size)) for batch in split.batches)
    with ProgressBar(title, total, progress and world.is_main) as bar:
        report = run(
            model, _recording(loader, indices), split.samples, alphabet, feature_config, world.device,
            name=split.name, on_batch=bar.advance, text_decoder=text_decoder,
        )  # fmt: skip
    return gather(report, indices, split.batches, world)


def _recording(batches: Iterable[Batch], indices: list[int]) -> Iterator[Batch]:
    """The batches as they are, noting the sample index of each usable sample (in ``run``'s order)."""
    for batch in batches:
        indices.extend(batch.indices)
        yield batch


def gather(report: Report, indices: Sequence[int], batches: Sequence[Sequence[int]], world: World) -> Report:
    """The reports of all processes as one, every process getting it: samples in the order a single
    process lists them (the order of ``batches``). ``indices``: the sample index of each of this
    process's ``report.samples``."""
    if not world.distributed:
        return report
    parts = all_gather(world, (list(zip(indices, report.samples, strict=True)), report.failed))
    position = {index: n for n, index in enumerate(i for batch in batches for i in batch)}
    pairs = sorted((pair for part, _ in parts for pair in part), key=lambda pair: position[pair[0]])
    return Report(report.name, [s for _, s in pairs], [line for _, failed in parts for line in failed])


def _result(sample: Sample, hypothesis: str, loss: float) -> SampleResult:
    words = metrics.word_errors(sample.transcript, hypothesis)
    chars = metrics.char_errors(sample.transcript, hypothesis)
    return SampleResult(
        wav_filename=str(sample.path),
        src=sample.transcript,
        res=" ".join(hypothesis.split()),
        loss=loss,
        wer=words.rate,
        cer=chars.rate,
        word_errors=words.edits,
        words=words.length,
        char_errors=chars.edits,
        chars=chars.length,
    )


def format_report(report: Report, report_count: int) -> str:
    """DeepSpeech's test report: totals, then the best, median and worst samples by WER then loss."""
    rule = "-" * 80
    lines = [
        f"Test on {report.name} - WER: {report.wer:.6f}, CER: {report.cer:.6f}, loss: {report.loss:.6f}"
        f" ({len(report.samples)} samples)"
    ]
    if report.failed:
        lines.append(f"{len(report.failed)} samples could not be read, e.g. {report.failed[0]}")
    ordered = sorted(report.samples, key=lambda s: (s.wer, s.loss))
    if not ordered:
        return "\n".join(lines)
    count = max(0, min(report_count, len(ordered)))
    middle = len(ordered) // 2
    half = count // 2
    sections = [
        ("Best WER", ordered[:count]),
        ("Median WER", ordered[max(0, middle - half) : max(0, middle - half) + count]),
        ("Worst WER", ordered[len(ordered) - count :]),
    ]
    for title, chosen in sections:
        if not chosen:
            continue
        lines += [rule, f"{title}:", rule]
        for s in chosen:
            lines += [
                f"WER: {s.wer:.6f}, CER: {s.cer:.6f}, loss: {s.loss:.6f}",
                f" - wav: {s.wav_filename}",
                f' - src: "{s.src}"',
                f' - res: "{s.res}"',
                rule,
            ]
    return "\n".join(lines)


def write_json(reports: Sequence[Report], path: Path) -> None:
    """Every sample of every report, as JSON, written atomically."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump([r.to_json() for r in reports], handle, indent=2, ensure_ascii=False)


def describe(text_decoder: decoder.Decoder) -> str:
    """One line saying how transcripts are decoded."""
    if text_decoder.greedy:
        return "Decoding: greedy"
    settings, scorer = text_decoder.settings, text_decoder.scorer
    if scorer is None:
        return f"Decoding: beam search, width {settings.width(scorer)}, no scorer"
    alpha, beta = settings.weights(scorer)
    return (
        f"Decoding: beam search, width {settings.width(scorer)}, scorer {scorer.path} "
        f"({len(scorer.vocabulary) - 1:,} words, alpha {alpha:.4g}, beta {beta:.4g})"
    )


def test_checkpoint(
    config: Config, directory: Path, log: Callable[[str], None] = print, world: World | None = None
) -> list[Report]:
    """``harken evaluate``: test the checkpoint in ``directory`` that --load_evaluate picks on every
    --test_files CSV (``evaluate``), print the reports and write every sample's result as JSON
    (``publish``). With a ``world`` of several processes, rank 0 reads the checkpoint and hands it to
    the others, and each process tests its shard of every test batch."""
    world = world if world is not None else World(device=choose_device(config.runtime.device))
    loaded = load_for_test(config, directory, world, log)
    reports = evaluate(loaded, config, world, log)
    publish(reports, config, directory, world, log)
    return reports


def load_for_test(config: Config, directory: Path, world: World, log: Callable[[str], None]) -> LoadedModel:
    """The checkpoint --load_evaluate picks in ``directory``, read by rank 0, on this process's device."""
    mode = config.checkpoint.load_evaluate
    where = "cpu" if world.distributed else world.device
    loaded = from_main(world, lambda: checkpoint.load_model(directory, mode, where))
    loaded.model.to(world.device)
    log(f"Testing {loaded.path}")
    return loaded


def evaluate(loaded: LoadedModel, config: Config, world: World, log: Callable[[str], None]) -> list[Report]:
    """A report (loss, WER, CER, every sample's transcript) of ``loaded`` on each --test_files CSV,
    decoded as the decoder options say; every process gets the gathered reports."""
    text_decoder = decoder.Decoder.from_config(loaded.alphabet, config.decoder)
    log(describe(text_decoder))
    reports = []
    workers = data.default_workers(config.data.num_workers, world.local_size)
    front_end = loaded.dims.features
    for csv in manifest.split_files(config.data.test_files):
        split = data.load_split("test", config.data, loaded.alphabet, front_end, log, files=str(csv))
        order = data.BatchOrder(split.batches, 0, 0, rank=world.rank, world=world.size)
        loader = data.loader(split.dataset, order, workers, pin=world.device.type == "cuda")
        report = run_shard(
            loaded.model, loader, split, loaded.alphabet, front_end, world,
            f"Testing {csv.name}", config.runtime.show_progressbar, text_decoder,
        )  # fmt: skip
        report.name = str(csv)
        reports.append(report)
    return reports


def publish(
    reports: Sequence[Report], config: Config, directory: Path, world: World, log: Callable[[str], None]
) -> None:
    """Print each report (--report_count samples a section) and write every sample's result as JSON to
    --test_output_file, else <directory>/test-results.json (rank 0 writes)."""
    for report in reports:
        log(format_report(report, config.runtime.report_count))
    output = Path(config.runtime.test_output_file or directory / "test-results.json")
    if world.is_main:
        write_json(reports, output)
    log(f"Wrote every sample's result to {output}")
