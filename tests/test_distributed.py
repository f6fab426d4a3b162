"""Training in several processes (torchrun, gloo on the CPU), mixed precision, gradient accumulation and
out-of-memory handling.

The torchrun tests start real processes: ``python -m torch.distributed.run --standalone --nproc_per_node 2
-m harken train ...``, exactly what a user types (with ``torchrun`` for the first three words).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile
import torch
from test_step import out_of_memory_above as _out_of_memory_above

from harken import checkpoint, cli, data, distributed, evaluate, precision
from harken import step as step_module
from harken import train as train_module
from harken.config import Config
from harken.distributed import World
from harken.train import TrainingError, train

from conftest import DATA, HAS_PROC, LDC93S1_TEXT, ldc_config, one_thread, running, terminate_when

QUIET = {"log": lambda _: None}
# What may differ between two computations of the same training in another order (one batch of 4 or two
# accumulated batches of 2; 2 processes or 1): float rounding, which Adam amplifies in one kind of entry
# only. An entry whose gradient is ~0 moves by about ±learning rate following the sign of that rounding
# (its epsilon, 1e-8 by default, is far smaller than the rounding), so a few entries may differ by up to
# 2 × learning rate × steps, on one machine and not another; every other entry agrees to float precision.
# A wrong shard, loss normalisation or accumulation instead moves nearly every entry by about the learning
# rate (measured: 93 % of entries by more than 1e-4, mean difference 4.5e-3). So the comparison counts:
# at most 0.1 % of entries may differ by more than 1e-5 (measured 0.007 % with epsilon 1e-8, 0.01 % with
# 1e-4), and the mean difference stays under 1e-5 (measured 2e-7). Both bounds are ~10x above what
# rounding gave and ~500x below what a wrong computation gives. (The torchrun comparisons train with
# epsilon 1e-4, which also keeps those few entries' steps small: their largest difference is 4e-5.)
FEW, CLOSE, MEAN = 1e-3, 1e-5, 1e-5


@pytest.fixture(autouse=True, scope="module")
def on_one_thread() -> Iterator[None]:
    """These models are tiny: one thread trains them fastest (two spin-wait on a busy machine), and the
    torchrun processes get one each (OMP_NUM_THREADS=1)."""
    with one_thread():
        yield


def _corpus(tmp_path: Path) -> str:
    """Five different utterances (two crops of LDC93S1 and the file at three sample rates): in batches of
    2 the last batch has one sample, so the second process has nothing in it (with --shuffle_batches that
    batch comes first, last or alone in a step of --gradient_accumulation 2 as the epochs go)."""
    samples, _ = soundfile.read(str(DATA / "LDC93S1.wav"), dtype="int16")
    soundfile.write(str(tmp_path / "crop1.wav"), samples[:32000], 16000)
    soundfile.write(str(tmp_path / "crop2.wav"), samples[8000:40000], 16000)
    rows = [
        (DATA / "LDC93S1.wav", LDC93S1_TEXT),
        (DATA / "LDC93S1_pcms16le_1_8000.wav", LDC93S1_TEXT),
        (DATA / "LDC93S1_pcms16le_2_44100.wav", LDC93S1_TEXT),
        (tmp_path / "crop1.wav", "she had your dark suit"),
        (tmp_path / "crop2.wav", "your dark suit in greasy"),
    ]
    csv = tmp_path / "five.csv"
    csv.write_text("wav_filename,wav_filesize,transcript\n" + "".join(f"{p},0,{t}\n" for p, t in rows))
    return str(csv)


FLAGS = [
    "--n_hidden", "32", "--dropout_rate", "0", "--train_batch_size", "2", "--gradient_accumulation", "2",
    "--shuffle_batches", "--dev_batch_size", "3", "--test_batch_size", "2", "--epochs", "2",
    "--learning_rate", "0.003", "--epsilon", "1e-4", "--checkpoint_secs", "0", "--max_to_keep", "10",
    "--num_workers", "0", "--noshow_progressbar",
]  # fmt: skip


def _args(csv: str, directory: Path) -> list[str]:
    return [
        "train", "--train_files", csv, "--dev_files", csv, "--test_files", csv,
        "--checkpoint_dir", str(directory), *FLAGS,
    ]  # fmt: skip


def _config(csv: str, directory: Path) -> Config:
    return cli.config_from_args(cli.build_parser().parse_args(_args(csv, directory)))


TORCHRUN_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HARKEN_DEBUG": "1"}


def _torchrun_command(processes: int, csv: str, directory: Path, *more: str) -> list[str]:
    """``torchrun --standalone --nproc_per_node N -m harken train ...`` (``more`` flags override)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
        "-m", "harken", *_args(csv, directory), *more,
    ]  # fmt: skip


def _torchrun(processes: int, csv: str, directory: Path, *more: str) -> str:
    """Run ``_torchrun_command``; returns its output."""
    command = _torchrun_command(processes, csv, directory, *more)
    done = subprocess.run(command, capture_output=True, text=True, env=TORCHRUN_ENV, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.read(path)["model"]


def _assert_same(a: Path, b: Path) -> None:
    first, second = _weights(a), _weights(b)
    assert first.keys() == second.keys()
    differences = torch.cat([(second[name] - value).abs().flatten() for name, value in first.items()])
    apart = float((differences > CLOSE).double().mean())
    assert apart <= FEW, f"{apart:.3%} of the weights differ by more than {CLOSE:g} (at most {FEW:.1%})"
    assert float(differences.double().mean()) < MEAN, float(differences.double().mean())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path, str]:
    """The same training (5 samples, global batch 2, accumulating 2 batches a step: 2 steps an epoch, 2
    epochs, a checkpoint after every step) in one process and in two: (corpus, one's directory, two's
    directory, two's output)."""
    tmp_path = tmp_path_factory.mktemp("distributed")
    csv = _corpus(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    train(_config(csv, one), **QUIET)
    return csv, one, two, _torchrun(2, csv, two)


def test_two_processes_train_like_one_with_the_same_global_batch(runs: tuple[str, Path, Path, str]) -> None:
    _, one, two, output = runs
    _assert_same(one / "train-4.pt", two / "train-4.pt")
    # rank 0 alone prints and writes: one of every line, one summary file, the same reports
    assert output.count("Epoch 2/2: train loss") == 1 and output.count("Checkpoints in") == 1
    assert len(list((two / "summaries").glob("events.out.tfevents.*"))) == 1
    assert (two / "loss.png").is_file() and len(checkpoint.listing(two, checkpoint.BEST)) == 1
    histories = [checkpoint.read(d / "train-4.pt")["progress"]["history"] for d in (one, two)]
    for theirs, ours in zip(*histories, strict=True):
        for key in ("train_loss", "dev_loss", "dev_cer"):  # dev metrics gathered from both processes
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4), key
    # the test set, sharded over both processes and gathered: every sample once, in one process's order
    reference, tested = (json.loads((d / "test-results.json").read_text())[0] for d in (one, two))
    assert [s["wav_filename"] for s in tested["samples"]] == [s["wav_filename"] for s in reference["samples"]]
    assert len(tested["samples"]) == 5 and tested["loss"] == pytest.approx(reference["loss"], rel=1e-4)


def test_resume_across_world_sizes_mid_epoch(runs: tuple[str, Path, Path, str], tmp_path: Path) -> None:
    """Checkpoints count global batches: one process resumes two's run and two resume one's, mid-epoch."""
    csv, one, two, _ = runs
    two_then_one, one_then_two = tmp_path / "2-1", tmp_path / "1-2"
    for source, target in ((two, two_then_one), (one, one_then_two)):
        target.mkdir()
        shutil.copy(source / "train-3.pt", target)  # epoch 2, after its first step
    logs: list[str] = []
    train(_config(csv, two_then_one), log=logs.append)
    assert any("epoch 2, batch 2, step 3" in line for line in logs)
    _assert_same(one / "train-4.pt", two_then_one / "train-4.pt")
    output = _torchrun(2, csv, one_then_two)
    assert "Resuming from" in output and "epoch 2, batch 2, step 3" in output
    _assert_same(one / "train-4.pt", one_then_two / "train-4.pt")


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not HAS_PROC, reason="finds the processes in /proc")
def test_sigterm_to_torchrun_stops_every_process_after_one_save(tmp_path: Path) -> None:
    """SIGTERM to the torchrun agent (what docker, Kubernetes or SLURM send it): it forwards the signal
    to each training process's process group (their DataLoader workers included); the processes agree
    on a step boundary, rank 0 saves there once, every process exits 143 and no process is left. torchrun
    itself then exits 1 (it re-raises the signal as an exception). The same command resumes and finishes."""
    csv, directory = _corpus(tmp_path), tmp_path / "run"
    more = ["--epochs", "20", "--num_workers", "1"]
    agent = subprocess.Popen(
        _torchrun_command(2, csv, directory, *more),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=TORCHRUN_ENV,
    )  # fmt: skip
    saved = lambda: bool(checkpoint.listing(directory, checkpoint.TRAIN))  # noqa: E731
    processes, out, err = terminate_when(agent, saved, 180, 120)  # 2 training processes, a worker each
    assert agent.returncode == 1 and "got signal: 15" in err, out + err
    assert err.count("harken: terminated (SIGTERM): progress saved") == 2, err  # both ranks, not killed
    assert len(processes) >= 4 and not [pid for pid in processes if running(pid)]
    saved = re.findall(r"Interrupted: progress saved to (\S+train-(\d+)\.pt)", out)
    assert len(saved) == 1, out  # rank 0 alone
    path, step = Path(saved[0][0]), int(saved[0][1])
    assert path == checkpoint.listing(directory, checkpoint.TRAIN)[-1] and 0 < step < 40
    assert checkpoint.read(path)["progress"]["step"] == step
    output = _torchrun(2, csv, directory, *more)
    assert f"Resuming from {path}: " in output and "Epoch 20/20" in output


def test_batch_order_shards_every_global_batch() -> None:
    batches = [[0, 1, 2, 3], [4, 5, 6], [7]]
    shards = [list(data.BatchOrder(batches, 0, 0, rank=r, world=2)) for r in (0, 1)]
    assert shards == [[[0, 1], [4, 5], [7]], [[2, 3], [6], []]]  # same number of steps everywhere
    assert all(len(data.BatchOrder(batches, 0, 0, start=1, rank=r, world=2)) == 2 for r in (0, 1))
    shuffled = [list(data.BatchOrder(batches, 3, 9, shuffle=True, rank=r, world=3)) for r in range(3)]
    merged = [sum((s[n] for s in shuffled), []) for n in range(3)]
    assert merged == list(data.BatchOrder(batches, 3, 9, shuffle=True))  # a function of (seed, epoch)
    assert [distributed.shard(list(range(5)), r, 3) for r in range(3)] == [[0, 1], [2, 3], [4]]


def test_workers_share_the_cores_of_a_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert data.default_workers(-1) == 4 and data.default_workers(-1, processes=8) == 1
    assert data.default_workers(2, processes=8) == 2


def test_one_process_without_torchrun() -> None:
    world = distributed.join("cpu", environ={})
    assert world == World(device=torch.device("cpu")) and world.is_main and not world.distributed
    assert distributed.all_sum(world, [1.5, 2]) == [1.5, 2.0] and distributed.all_gather(world, "x") == ["x"]
    assert distributed.from_main(world, lambda: 7) == 7


def test_what_several_processes_cannot_do_is_refused(tmp_path: Path) -> None:
    world = World(rank=1, size=4)
    config = ldc_config(tmp_path, epochs=1)
    with pytest.raises(TrainingError, match="--train_batch_size 1 is the global batch, shared by 4"):
        train_module._check_directories(config, world)
    config = ldc_config(tmp_path, epochs=1, auto_batch_size=True)
    config = replace(config, data=replace(config.data, train_batch_size=8))
    with pytest.raises(TrainingError, match="--auto_batch_size works in one process"):
        train_module._check_directories(config, world)


def test_new_flags_parse() -> None:
    args = cli.build_parser().parse_args(
        ["train", "--automatic_mixed_precision", "--gradient_accumulation", "3", "--auto_batch_size"]
    )
    config = cli.config_from_args(args).train
    assert config.automatic_mixed_precision and config.gradient_accumulation == 3 and config.auto_batch_size
    with pytest.raises(ValueError, match="--gradient_accumulation 0: must be 1 or more"):
        replace(config, gradient_accumulation=0)


def _five(tmp_path: Path, directory: str, batch: int, **train_options: object) -> Config:
    config = ldc_config(tmp_path / directory, epochs=2, n_hidden=32, files=_corpus(tmp_path), **train_options)
    return replace(config, data=replace(config.data, train_batch_size=batch))


def _final(directory: Path) -> Path:
    return checkpoint.listing(directory, checkpoint.TRAIN)[-1]


def test_automatic_mixed_precision_falls_back_to_float32_on_cpus_without_bfloat16(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)
    logs: list[str] = []
    train(_five(tmp_path, "amp", 4, automatic_mixed_precision=True), log=logs.append)
    train(_five(tmp_path, "fp32", 4), **QUIET)
    assert sum("training on cpu in float32" in line for line in logs) == 1
    a, b = _weights(_final(tmp_path / "amp")), _weights(_final(tmp_path / "fp32"))
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=0)


def test_automatic_mixed_precision_trains_in_bfloat16_on_cpus_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)  # emulated where the CPU lacks it
    logs: list[str] = []
    amp = train(_five(tmp_path, "amp", 2, automatic_mixed_precision=True), log=logs.append)
    fp32 = train(_five(tmp_path, "fp32", 2), **QUIET)
    assert any("bfloat16 autocast on the CPU" in line for line in logs)
    assert _weights(_final(tmp_path / "amp"))["layer_1.linear.weight"].dtype == torch.float32
    for ours, theirs in zip(amp.progress.history, fp32.progress.history, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=0.02)  # bfloat16: 8 bits


@pytest.mark.slow
def test_ldc93s1_overfit_in_bfloat16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepSpeech's smoke test with CPU bfloat16 autocast: the exact transcript, as in float32."""
    from harken.inference import Model
    from harken.transcribe import transcribe_files

    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)
    train(ldc_config(tmp_path, epochs=200, automatic_mixed_precision=True), **QUIET)
    (result,) = transcribe_files(Model(tmp_path), [DATA / "LDC93S1.wav"])
    assert result.text == LDC93S1_TEXT


def test_gradient_accumulation_equals_the_larger_batch(tmp_path: Path) -> None:
    big = train(_five(tmp_path, "big", 4), **QUIET)
    accumulated = train(_five(tmp_path, "accumulated", 2, gradient_accumulation=2), **QUIET)
    assert big.progress.step == accumulated.progress.step == 4  # two updates an epoch: 4 + 1 samples
    _assert_same(_final(tmp_path / "big"), _final(tmp_path / "accumulated"))


def test_out_of_memory_names_the_batch_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _out_of_memory_above(monkeypatch, 2)
    with pytest.raises(TrainingError, match=r"out of memory on cpu training 4 samples at a time .*"
                       r"lower --train_batch_size \(now 4.*--auto_batch_size.*--dev_batch_size"):  # fmt: skip
        train(_five(tmp_path, "oom", 4), **QUIET)


def test_auto_batch_size_halves_and_keeps_the_updates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(_five(tmp_path, "whole", 4), **QUIET)
    _out_of_memory_above(monkeypatch, 1)
    logs: list[str] = []
    result = train(_five(tmp_path, "pieces", 4, auto_batch_size=True), log=logs.append)
    assert result.progress.step == 4
    assert sum("in 4 pieces of at most 1 samples" in line for line in logs) == 1
    _assert_same(_final(tmp_path / "whole"), _final(tmp_path / "pieces"))


def test_validation_out_of_memory_names_dev_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run_shard(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(evaluate, "run_shard", run_shard)
    config = _five(tmp_path, "dev", 4)
    config = replace(config, data=replace(config.data, dev_files=config.data.train_files, dev_batch_size=5))
    with pytest.raises(TrainingError, match=r"validating dev: lower --dev_batch_size \(now 5\)"):
        train(config, **QUIET)


def test_a_step_follows_the_mean_loss_of_its_samples(tmp_path: Path) -> None:
    """Whatever the accumulation, pieces or missing samples, a step's gradient is that of the mean
    per-sample CTC loss of the samples it trained (Adam hides a constant factor; clipping does not)."""
    config = _five(tmp_path, "grad", 2, gradient_accumulation=2)
    run = train_module.build(config, **QUIET)
    split = data.load_split("train", config.data, run.alphabet, config.features, **QUIET)
    batches = [data.collate([split.dataset[i] for i in batch]) for batch in split.batches]  # 2, 2 and 1
    run.optimizer.step = lambda *args, **kwargs: None  # type: ignore[method-assign]
    for window, pieces in (([batches[0], batches[1]], 1), ([batches[0], batches[1]], 2), ([batches[2]], 1)):
        run.pieces = pieces
        loss, skipped = step_module.optimizer_step(run.learner, window, "", print)
        grads = [p.grad.clone() for p in run.model.parameters() if p.grad is not None]
        run.model.zero_grad()
        whole = data.collate([split.dataset[i] for batch in window for i in batch.indices])
        losses, _, _ = evaluate.batch_losses(run.model, whole, config.features)
        losses.mean().backward()
        assert skipped == [] and loss == pytest.approx(float(losses.mean().detach()), rel=1e-6)
        for grad, parameter in zip(grads, run.model.parameters(), strict=True):
            expected = parameter.grad
            assert expected is not None
            # float32 rounding differs between batch shapes (~1e-5); a wrong normaliser is off by >= 25 %
            assert float((grad - expected).norm()) <= 1e-4 * float(expected.norm())
