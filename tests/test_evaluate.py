from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from harken import data, evaluate
from harken.alphabet import Alphabet
from harken.config import DataConfig, FeatureConfig, ModelConfig
from harken.evaluate import Report, SampleResult
from harken.manifest import Sample
from harken.model import DeepSpeech

DATA = Path(__file__).parent / "data"
TEXT = "she had your dark suit in greasy wash water all year"
RULE = "-" * 80


def result(name: str, wer: float, loss: float, words: int = 4, cer: float = 0.0) -> SampleResult:
    return SampleResult(
        wav_filename=f"/clips/{name}.wav",
        src=f"reference {name}",
        res=f"hypothesis {name}",
        loss=loss,
        wer=wer,
        cer=cer,
        word_errors=round(wer * words),
        words=words,
        char_errors=round(cer * 10),
        chars=10,
    )


def sections(text: str) -> dict[str, list[str]]:
    """Section title -> the wav names listed under it, in order."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.endswith("WER:") and not line.startswith(" "):
            current = line[:-1]
            found[current] = []
        elif line.startswith(" - wav: "):
            found[current].append(Path(line[len(" - wav: ") :]).stem)
    return found


def seven() -> Report:
    # WER ties are broken by loss: "c" (0.5, 1.0) before "b" (0.5, 2.0).
    samples = [
        result("e", 0.75, 1.0),
        result("a", 0.0, 3.0),
        result("b", 0.5, 2.0),
        result("g", 1.0, 9.0),
        result("c", 0.5, 1.0),
        result("f", 1.0, 5.0),
        result("d", 0.5, 4.0),
    ]
    return Report("test.csv", samples)


def test_format_report_sections_are_ordered_by_wer_then_loss() -> None:
    text = evaluate.format_report(seven(), 3)
    # Ascending (WER, loss): a c b d e f g
    assert sections(text) == {
        "Best WER": ["a", "c", "b"],
        "Median WER": ["b", "d", "e"],
        "Worst WER": ["e", "f", "g"],
    }
    lines = text.splitlines()
    assert lines[1:4] == [RULE, "Best WER:", RULE]
    index = lines.index(" - wav: /clips/a.wav")
    assert lines[index - 1] == "WER: 0.000000, CER: 0.000000, loss: 3.000000"
    assert lines[index + 1 : index + 4] == [' - src: "reference a"', ' - res: "hypothesis a"', RULE]


@pytest.mark.parametrize(
    ("count", "sizes"), [(1, [1, 1, 1]), (2, [2, 2, 2]), (5, [5, 5, 5]), (10, [7, 7, 7])]
)
def test_format_report_shows_report_count_samples_per_section(count: int, sizes: list[int]) -> None:
    found = sections(evaluate.format_report(seven(), count))
    assert [len(found[title]) for title in ("Best WER", "Median WER", "Worst WER")] == sizes
    assert found["Best WER"][0] == "a" and found["Worst WER"][-1] == "g"


def test_format_report_median_of_even_count() -> None:
    report = Report("x", [result(str(i), i / 10, 1.0, words=10) for i in range(6)])
    found = sections(evaluate.format_report(report, 2))
    assert found == {"Best WER": ["0", "1"], "Median WER": ["2", "3"], "Worst WER": ["4", "5"]}


def test_format_report_totals_line() -> None:
    report = seven()
    text = evaluate.format_report(report, 1)
    words = 7 * 4
    errors = sum(s.word_errors for s in report.samples)
    mean_loss = sum(s.loss for s in report.samples) / 7
    assert text.splitlines()[0] == (
        f"Test on test.csv - WER: {errors / words:.6f}, CER: 0.000000, loss: {mean_loss:.6f} (7 samples)"
    )


def test_format_report_without_samples_and_with_failures() -> None:
    empty = Report("empty.csv", failed=["/x/broken.wav: not a readable audio file (bad)"])
    text = evaluate.format_report(empty, 3)
    assert text.splitlines() == [
        "Test on empty.csv - WER: 0.000000, CER: 0.000000, loss: nan (0 samples)",
        "1 samples could not be read, e.g. /x/broken.wav: not a readable audio file (bad)",
    ]
    assert "Best WER" not in evaluate.format_report(seven(), 0)


def test_report_wer_is_corpus_level() -> None:
    # 1 of 1 words wrong and 0 of 9 words wrong: corpus WER 0.1, not the mean 0.5.
    report = Report("x", [result("short", 1.0, 1.0, words=1), result("long", 0.0, 2.0, words=9)])
    assert report.wer == pytest.approx(0.1)
    assert report.cer == 0.0
    assert report.loss == pytest.approx(1.5)
    assert math.isnan(Report("none").loss)
    assert Report("none").wer == 0.0


def test_write_json_writes_every_sample(tmp_path: Path) -> None:
    first = seven()
    second = Report("other.csv", [result("z", 0.25, 0.5)], failed=["/x/bad.wav: no such file"])
    target = tmp_path / "out" / "results.json"
    evaluate.write_json([first, second], target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]  # no temporary left
    loaded = json.loads(target.read_text(encoding="utf-8"))
    assert [r["test_files"] for r in loaded] == ["test.csv", "other.csv"]
    assert [s["wav_filename"] for s in loaded[0]["samples"]] == [s.wav_filename for s in first.samples]
    assert loaded[0]["samples"][0] == {
        "wav_filename": "/clips/e.wav",
        "src": "reference e",
        "res": "hypothesis e",
        "loss": 1.0,
        "wer": 0.75,
        "cer": 0.0,
        "word_errors": 3,
        "words": 4,
        "char_errors": 0,
        "chars": 10,
    }
    assert loaded[0]["wer"] == pytest.approx(first.wer)
    assert loaded[1]["failed"] == ["/x/bad.wav: no such file"]
    assert loaded[1]["loss"] == pytest.approx(0.5)


def test_write_json_non_ascii_text(tmp_path: Path) -> None:
    report = Report("ü.csv", [SampleResult("/a.wav", "grüße", "grüsse", 1.0, 1.0, 0.2)])
    target = tmp_path / "r.json"
    evaluate.write_json([report], target)
    assert "grüße" in target.read_text(encoding="utf-8")
    assert json.loads(target.read_text(encoding="utf-8"))[0]["samples"][0]["src"] == "grüße"


def test_write_json_file_has_ordinary_permissions(tmp_path: Path) -> None:
    import os
    import stat

    target = tmp_path / "r.json"
    evaluate.write_json([seven()], target)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_run_over_ldc93s1_with_an_untrained_model() -> None:
    alphabet = Alphabet.from_file(DATA / "alphabet.txt")
    features = FeatureConfig()
    lines: list[str] = []
    config = DataConfig(test_files=str(DATA / "LDC93S1.csv"))
    split = data.load_split("test", config, alphabet, features, lines.append)
    loader = data.loader(split.dataset, data.BatchOrder(split.batches, 0, 0), 0)
    torch.manual_seed(0)
    model = DeepSpeech(features, ModelConfig(n_hidden=16), alphabet.n_classes)
    model.train()  # run() switches to eval mode
    counted: list[int] = []
    report = evaluate.run(
        model, loader, split.samples, alphabet, features, torch.device("cpu"), "ldc", counted.append
    )
    assert not model.training
    assert report.name == "ldc"
    assert report.failed == []
    assert counted == [1]
    [sample] = report.samples
    assert sample.wav_filename == str(DATA / "LDC93S1.wav")
    assert sample.src == TEXT
    assert math.isfinite(sample.loss) and sample.loss > 0
    assert sample.words == 11 and sample.chars == len(TEXT)
    assert set(sample.res) <= set(alphabet.symbols)
    assert sample.res == " ".join(sample.res.split())
    assert sample.wer == pytest.approx(sample.word_errors / 11)
    assert report.wer == sample.wer and report.loss == sample.loss
    # The loss is the CTC loss of the model's output: a freshly computed one agrees.
    batch = next(iter(data.loader(split.dataset, data.BatchOrder(split.batches, 0, 0), 0)))
    with torch.no_grad():
        losses, log_probs, lengths = evaluate.batch_losses(model, batch, features)
    assert float(losses[0]) == pytest.approx(sample.loss, rel=1e-5)
    assert log_probs.shape == (1, (46797 - 512) // 320 + 1, alphabet.n_classes)
    assert re.match(r"Test on ldc - WER: \d\.\d{6}", evaluate.format_report(report, 1))


def test_run_reports_unreadable_files(tmp_path: Path) -> None:
    alphabet = Alphabet.from_file(DATA / "alphabet.txt")
    features = FeatureConfig()
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"junk" * 100)
    samples = [Sample(garbage, 0, "x"), Sample(DATA / "LDC93S1.wav", 0, TEXT)]
    dataset = data.SpeechDataset(samples, alphabet, features)
    loader = data.loader(dataset, data.BatchOrder([[0], [1]], 0, 0), 0)
    torch.manual_seed(0)
    model = DeepSpeech(features, ModelConfig(n_hidden=16), alphabet.n_classes)
    counted: list[int] = []
    report = evaluate.run(
        model, loader, samples, alphabet, features, torch.device("cpu"), "x", counted.append
    )
    assert counted == [1, 1]
    assert len(report.samples) == 1 and report.samples[0].src == TEXT
    assert len(report.failed) == 1 and "garbage.wav" in report.failed[0]


def test_a_scorer_built_from_text_lowers_the_wer_of_an_imperfect_model(
    ldc_noisy_model: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from harken.config import CheckpointConfig, Config, DecoderConfig, RuntimeConfig
    from harken.language_model import LmConfig, build

    scorer = tmp_path / "vocab.scorer"
    build(LmConfig(text=(DATA / "vocab.txt",), output=scorer), Alphabet.default(), lambda _: None)
    config = Config(
        data=DataConfig(test_files=str(DATA / "LDC93S1.csv"), num_workers=0),
        checkpoint=CheckpointConfig(checkpoint_dir=str(ldc_noisy_model)),
        runtime=RuntimeConfig(show_progressbar=False, test_output_file=str(tmp_path / "out.json")),
    )
    lines: list[str] = []
    greedy = evaluate.test_checkpoint(replace(config, decoder=DecoderConfig(beam_width=1)), ldc_noisy_model)
    beam = evaluate.test_checkpoint(config, ldc_noisy_model)  # beam search, no LM
    scored = evaluate.test_checkpoint(
        replace(config, decoder=DecoderConfig(scorer_path=str(scorer))), ldc_noisy_model, lines.append
    )
    assert greedy[0].wer > 0 and beam[0].wer > 0  # "... our dark suit i greasy ..."
    assert scored[0].wer == 0.0 and scored[0].samples[0].res == TEXT
    assert any(line.startswith(f"Decoding: beam search, width 500, scorer {scorer}") for line in lines)


def test_the_library_function_reports_without_printing_or_writing(
    ldc_noisy_model: Path, tmp_path: Path
) -> None:
    """evaluate.evaluate returns one report a CSV and writes nothing; publish prints them and writes
    the JSON; harken evaluate's command (test_checkpoint) is the two together."""
    import json

    from harken.config import CheckpointConfig, Config, RuntimeConfig
    from harken.distributed import World

    csv = str(DATA / "LDC93S1.csv")
    output = tmp_path / "results.json"
    config = Config(
        data=DataConfig(test_files=f"{csv},{csv}", num_workers=0),
        checkpoint=CheckpointConfig(checkpoint_dir=str(ldc_noisy_model)),
        runtime=RuntimeConfig(show_progressbar=False, report_count=1, test_output_file=str(output)),
    )
    world, lines = World(), []  # type: ignore[var-annotated]
    loaded = evaluate.load_for_test(config, ldc_noisy_model, world, lines.append)
    reports = evaluate.evaluate(loaded, config, world, lines.append)
    assert [r.name for r in reports] == [csv, csv] and len(reports[0].samples) == 1
    assert not output.exists() and not any("WER" in line for line in lines)
    evaluate.publish(reports, config, ldc_noisy_model, world, lines.append)
    assert len(json.loads(output.read_text())) == 2 and sum("WER" in line for line in lines) >= 2
