from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from harken import audio, data, features
from harken.alphabet import Alphabet
from harken.config import DataConfig, FeatureConfig
from harken.data import BatchOrder, DataError, Item, SpeechDataset
from harken.manifest import Sample

DATA = Path(__file__).parent / "data"
TEXT = "she had your dark suit in greasy wash water all year"
CONFIG = FeatureConfig()
LDC_FRAMES = (46797 - 512) // 320 + 1  # LDC93S1.wav has 46797 samples at 16 kHz


@pytest.fixture(scope="module")
def alphabet() -> Alphabet:
    return Alphabet.from_file(DATA / "alphabet.txt")


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 0.5 s of LDC93S1."""
    path = tmp_path_factory.mktemp("short") / "short.wav"
    samples, _ = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    soundfile.write(str(path), samples[:8000], 16000)
    return path


def test_item_shapes_and_values(alphabet: Alphabet) -> None:
    dataset = SpeechDataset([Sample(DATA / "LDC93S1.wav", 0, TEXT)], alphabet, CONFIG)
    assert len(dataset) == 1
    item = dataset[0]
    assert isinstance(item, Item)
    assert item.index == 0
    assert item.features.shape == (LDC_FRAMES, 26)
    assert item.features.dtype == torch.float32
    assert item.labels.dtype == torch.int64
    assert item.labels.tolist() == alphabet.encode(TEXT)
    expected = features.mfcc(torch.from_numpy(audio.read(DATA / "LDC93S1.wav", 16000)), CONFIG)
    torch.testing.assert_close(item.features, expected, rtol=0, atol=0)


def test_item_of_resampled_file(alphabet: Alphabet) -> None:
    dataset = SpeechDataset([Sample(DATA / "LDC93S1_pcms16le_2_44100.wav", 0, TEXT)], alphabet, CONFIG)
    item = dataset[0]
    assert isinstance(item, Item)
    assert abs(item.features.shape[0] - LDC_FRAMES) <= 1
    assert item.features.shape[1] == 26


def test_collate_pads_and_records_lengths(alphabet: Alphabet, short_wav: Path) -> None:
    samples = [Sample(DATA / "LDC93S1.wav", 0, TEXT), Sample(short_wav, 0, "she")]
    dataset = SpeechDataset(samples, alphabet, CONFIG)
    long_item, short_item = dataset[0], dataset[1]
    assert isinstance(long_item, Item) and isinstance(short_item, Item)
    short_frames = (8000 - 512) // 320 + 1
    assert short_item.features.shape == (short_frames, 26)

    batch = data.collate([short_item, long_item])
    assert len(batch) == 2
    assert batch.indices == [1, 0]
    assert batch.failed == []
    assert batch.features.shape == (2, LDC_FRAMES, 26)
    assert batch.lengths.tolist() == [short_frames, LDC_FRAMES]
    assert batch.labels.shape == (2, len(TEXT))
    assert batch.labels.dtype == torch.int64
    assert batch.label_lengths.tolist() == [3, len(TEXT)]
    torch.testing.assert_close(batch.features[0, :short_frames], short_item.features)
    assert bool((batch.features[0, short_frames:] == 0).all())
    torch.testing.assert_close(batch.features[1], long_item.features)
    assert batch.labels[0].tolist() == alphabet.encode("she") + [0] * (len(TEXT) - 3)
    assert batch.labels[1].tolist() == alphabet.encode(TEXT)


def test_device_features_batch_audio_and_compute_the_same_frames(alphabet: Alphabet, short_wav: Path) -> None:
    """--device_features: the loader hands over padded audio; ``frames`` (wherever the batch lives) gives
    each row exactly the frames its own utterance gives in the loader, and splitting keeps that."""
    samples = [Sample(DATA / "LDC93S1.wav", 0, TEXT), Sample(short_wav, 0, "she")]
    by_loader = data.collate([SpeechDataset(samples, alphabet, CONFIG)[i] for i in (1, 0)])
    audio_items = [SpeechDataset(samples, alphabet, CONFIG, audio_only=True)[i] for i in (1, 0)]
    batch = data.collate(audio_items)
    assert batch.audio == CONFIG and batch.features.shape == (2, 46797)  # [batch, n_samples], zero-padded
    assert batch.lengths.tolist() == by_loader.lengths.tolist() == [(8000 - 512) // 320 + 1, LDC_FRAMES]
    frames = batch.frames()  # [2, LDC_FRAMES, 26]
    torch.testing.assert_close(frames, by_loader.features, rtol=0, atol=1e-6)  # padded with zeros too
    first, second = batch.split(2)
    torch.testing.assert_close(first.frames()[0], frames[0, : first.lengths[0]], rtol=0, atol=1e-6)
    torch.testing.assert_close(second.frames()[0], frames[1], rtol=0, atol=1e-6)
    assert by_loader.frames() is by_loader.features


def test_device_features_refuse_feature_domain_augmentation_and_the_cache(tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    csv.write_text(f"wav_filename,wav_filesize,transcript\n{DATA / 'LDC93S1.wav'},0,{TEXT}\n")
    config = DataConfig(
        train_files=str(csv), device_features=True, augment=("volume[p=1]", "frequency_mask[p=0.5]")
    )
    with pytest.raises(DataError, match=r"frequency_mask\[p=0\.5.*works on spectrograms or features"):
        data.load_split("train", config, Alphabet.default(), CONFIG, lambda _: None)
    audible = DataConfig(train_files=str(csv), device_features=True, augment=("volume[p=1,dbfs=-20]",))
    split = data.load_split("train", audible, Alphabet.default(), CONFIG, lambda _: None)
    item = split.dataset[(0, 0, 0.0)]  # augmented in the loader, as audio
    assert isinstance(item, Item) and item.features.dim() == 1 and item.audio == CONFIG
    assert not np.allclose(item.features.numpy(), audio.read(DATA / "LDC93S1.wav", 16000))
    with pytest.raises(ValueError, match="--device_features computes features in the training step"):
        DataConfig(device_features=True, feature_cache=str(tmp_path / "cache"))


def test_unreadable_file_is_a_failed_entry(alphabet: Alphabet, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio" * 100)
    samples = [
        Sample(garbage, 0, "x"),
        Sample(DATA / "LDC93S1.wav", 0, TEXT),
        Sample(tmp_path / "gone.wav", 0, "x"),
    ]
    dataset = SpeechDataset(samples, alphabet, CONFIG)
    first = dataset[0]
    assert isinstance(first, tuple)
    assert first[0] == 0 and "garbage.wav: not a readable audio file" in first[1]

    batch = data.collate([dataset[0], dataset[1], dataset[2]])
    assert batch.indices == [1]
    assert [index for index, _ in batch.failed] == [0, 2]
    assert "gone.wav: no such file" in batch.failed[1][1]
    assert batch.features.shape == (1, LDC_FRAMES, 26)
    assert len(batch) == 1

    nothing = data.collate([dataset[0]])
    assert len(nothing) == 0 and nothing.features.shape[0] == 0 and nothing.lengths.tolist() == []


def samples_with(durations: list[float], sizes: list[int] | None = None) -> list[Sample]:
    sizes = sizes or [0] * len(durations)
    return [
        Sample(Path(f"{i}.wav"), size, "x", d)
        for i, (d, size) in enumerate(zip(durations, sizes, strict=True))
    ]


def test_sorted_batches_by_duration() -> None:
    samples = samples_with([3.0, 1.0, 5.0, 2.0, 4.0])
    assert data.sorted_batches(samples, 2) == [[1, 3], [0, 4], [2]]
    assert data.sorted_batches(samples, 2, reverse=True) == [[2, 4], [0, 3], [1]]
    assert data.sorted_batches(samples, 1) == [[1], [3], [0], [4], [2]]
    assert data.sorted_batches(samples, 10) == [[1, 3, 0, 4, 2]]
    assert data.sorted_batches(samples, 0) == [[1], [3], [0], [4], [2]]  # batch size at least 1
    assert data.sorted_batches([], 4) == []
    # Equal durations fall back to the file size.
    ties = samples_with([1.0, 1.0, 1.0], [30, 10, 20])
    assert data.sorted_batches(ties, 3) == [[1, 2, 0]]


BATCHES = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]]


def test_batch_order_without_shuffle_keeps_order() -> None:
    order = BatchOrder(BATCHES, epoch=3, seed=1)
    assert list(order) == BATCHES
    assert len(order) == len(BATCHES)


def test_batch_order_shuffle_is_deterministic_per_seed_and_epoch() -> None:
    first = list(BatchOrder(BATCHES, epoch=0, seed=7, shuffle=True))
    again = list(BatchOrder(BATCHES, epoch=0, seed=7, shuffle=True))
    next_epoch = list(BatchOrder(BATCHES, epoch=1, seed=7, shuffle=True))
    other_seed = list(BatchOrder(BATCHES, epoch=0, seed=8, shuffle=True))
    assert first == again
    assert sorted(first) == BATCHES  # a permutation of the same batches
    assert first != next_epoch
    assert sorted(next_epoch) == BATCHES
    assert first != other_seed
    # Shuffling leaves the global RNG alone.
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    BatchOrder(BATCHES, epoch=0, seed=7, shuffle=True)
    assert torch.equal(torch.rand(1), expected)


def test_batch_order_start_skips_batches() -> None:
    order = BatchOrder(BATCHES, epoch=0, seed=0, start=3)
    assert list(order) == BATCHES[3:]
    assert len(order) == 5
    shuffled = list(BatchOrder(BATCHES, epoch=2, seed=5, shuffle=True))
    resumed = BatchOrder(BATCHES, epoch=2, seed=5, shuffle=True, start=3)
    assert list(resumed) == shuffled[3:]
    assert len(resumed) == 5
    assert list(BatchOrder(BATCHES, epoch=0, seed=0, start=8)) == []
    assert len(BatchOrder(BATCHES, epoch=0, seed=0, start=20)) == 0


def test_loader_with_and_without_workers_gives_the_same_batches(alphabet: Alphabet, short_wav: Path) -> None:
    samples = [
        Sample(DATA / "LDC93S1.wav", 0, TEXT, 2.92),
        Sample(short_wav, 0, "she", 0.5),
        Sample(DATA / "LDC93S1_pcms16le_1_8000.wav", 0, TEXT, 2.92),
    ]
    dataset = SpeechDataset(samples, alphabet, CONFIG)
    batches = data.sorted_batches(samples, 2)
    assert batches == [[1, 0], [2]]
    results = []
    for workers in (0, 1):
        results.append(list(data.loader(dataset, BatchOrder(batches, 0, 0), workers)))
    serial, parallel = results
    assert [b.indices for b in serial] == [[1, 0], [2]]
    assert [b.indices for b in parallel] == [[1, 0], [2]]
    for a, b in zip(serial, parallel, strict=True):
        torch.testing.assert_close(a.features, b.features, rtol=0, atol=0)
        assert a.lengths.tolist() == b.lengths.tolist()
        assert torch.equal(a.labels, b.labels)
        assert a.label_lengths.tolist() == b.label_lengths.tolist()
    assert serial[0].lengths.tolist() == [(8000 - 512) // 320 + 1, LDC_FRAMES]


def test_default_workers() -> None:
    assert data.default_workers(0) == 0
    assert data.default_workers(3) == 3
    assert 0 <= data.default_workers(-1) <= 4


def test_load_split_batches_the_usable_samples(alphabet: Alphabet) -> None:
    lines: list[str] = []
    csv = str(DATA / "LDC93S1.csv")
    split = data.load_split(
        "train", DataConfig(train_files=csv, train_batch_size=4), alphabet, CONFIG, lines.append
    )
    assert split.name == "train"
    assert [s.path for s in split.samples] == [DATA / "LDC93S1.wav"]
    assert split.samples[0].duration == pytest.approx(2.92, abs=0.01)
    assert split.batches == [[0]]
    assert len(split.dataset) == 1
    assert len(lines) == 1 and lines[0].startswith(f"train ({csv}): 1 samples")


def test_load_split_limit(alphabet: Alphabet, tmp_path: Path) -> None:
    csv = tmp_path / "three.csv"
    wav = DATA / "LDC93S1.wav"
    csv.write_text(f"wav_filename,wav_filesize,transcript\n{wav},0,a\n{wav},0,b\n{wav},0,c\n")
    split = data.load_split(
        "dev", DataConfig(dev_files=str(csv), limit_dev=2), alphabet, CONFIG, lambda _: None
    )
    assert [s.transcript for s in split.samples] == ["a", "b"]
    assert split.batches == [[0], [1]]


def test_load_split_without_usable_samples_names_the_files(alphabet: Alphabet, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        f"wav_filename,wav_filesize,transcript\nmissing.wav,0,hello\n{DATA / 'LDC93S1.wav'},0,UPPER\n"
    )
    empty = tmp_path / "empty.csv"
    empty.write_text("wav_filename,wav_filesize,transcript\n")
    files = f"{bad},{empty}"
    lines: list[str] = []
    with pytest.raises(DataError, match="no usable samples") as info:
        data.load_split("test", DataConfig(test_files=files), alphabet, CONFIG, lines.append)
    assert str(bad) in str(info.value) and str(empty) in str(info.value)
    assert str(info.value).startswith("test:")
    # What was skipped and why was logged before giving up.
    assert "missing file" in lines[0] and "characters outside the alphabet" in lines[0]


def test_resampled_audio_matches_the_16k_features_roughly(alphabet: Alphabet) -> None:
    """The 8 kHz copy of LDC93S1 gives features close to the original's in the low coefficients."""
    dataset = SpeechDataset(
        [Sample(DATA / "LDC93S1.wav", 0, TEXT), Sample(DATA / "LDC93S1_pcms16le_1_8000.wav", 0, TEXT)],
        alphabet,
        CONFIG,
    )
    a, b = dataset[0], dataset[1]
    assert isinstance(a, Item) and isinstance(b, Item)
    n = min(a.features.shape[0], b.features.shape[0])
    assert n >= LDC_FRAMES - 1
    c0 = np.corrcoef(a.features[:n, 0].numpy(), b.features[:n, 0].numpy())[0, 1]
    assert c0 > 0.9


def test_silent_file_is_a_failed_entry(alphabet: Alphabet, tmp_path: Path) -> None:
    silent = tmp_path / "silent.wav"
    soundfile.write(str(silent), np.zeros(16000, dtype=np.int16), 16000)
    dataset = SpeechDataset([Sample(silent, 0, "hello")], alphabet, FeatureConfig())
    batch = data.collate([dataset[0]])
    assert len(batch) == 0 and batch.failed == [(0, f"{silent}: silent (every sample is zero)")]


def test_the_training_set_is_augmented_by_seed_epoch_and_sample(tmp_path: Path) -> None:
    from harken import cli
    from harken.config import DataConfig, FeatureConfig

    specs = ("add[p=1,domain=features,stddev=0.5]", "time_mask[p=1,n=2,size=5]")
    config = DataConfig(train_files=str(DATA / "LDC93S1.csv"), augment=specs)
    alphabet, features = Alphabet.default(), FeatureConfig()
    split = data.load_split("train", config, alphabet, features, lambda _: None, seed=7)
    plain = data.load_split("dev", DataConfig(dev_files=str(DATA / "LDC93S1.csv")), alphabet, features, print)
    assert split.dataset.augmenter is not None and plain.dataset.augmenter is None
    clean = split.dataset[0].features  # a bare index: not augmented (dev and test never are)
    first, again, later = (split.dataset[(0, epoch, 0.0)].features for epoch in (0, 0, 1))
    assert torch.equal(clean, plain.dataset[0].features)
    assert torch.equal(first, again) and not torch.equal(first, clean) and not torch.equal(first, later)
    order = data.BatchOrder(split.batches, 3, 7)
    assert list(order) == [[0]]
    order.epochs = 10
    assert list(order) == [[(0, 3, 0.3)]]
    args = cli.build_parser().parse_args(["train", "--augment", specs[0], "--augment", specs[1]])
    assert cli.config_from_args(args).data.augment == specs
    with pytest.raises(ValueError, match="nosuch"):
        data.load_split("train", DataConfig(train_files=config.train_files, augment=("nosuch[p=1]",)),
                        alphabet, features, print)  # fmt: skip
