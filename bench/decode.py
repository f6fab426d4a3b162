"""CTC beam-search decoding speed and WER: harken's decoder against pyctcdecode (the peer).

    .venv/bin/python bench/decode.py --checkpoint_dir runs/demo/checkpoints \
        --test_files runs/demo/corpus/test.csv --scorer runs/demo/lm.scorer [--limit N]

The peer is bench-only (never a harken dependency):
    .venv/bin/pip install kenlm pygtrie && .venv/bin/pip install --no-deps pyctcdecode

Log-probabilities are computed once with the checkpoint (torch, one thread); only decoding is timed. Both
decoders get the same float32 [time, n_classes] log-probs (pyctcdecode calls them logits but adds them
as log-probs), the same beam width, the same KenLM model (the .scorer file itself: KenLM reads its binary
and ignores the trie and metadata after it), the same word list (the scorer's vocabulary) and the same
alpha / beta, which mean the same in both: each word adds ``alpha * ln P(word | history) + beta``
(pyctcdecode turns KenLM's log10 into natural logs, as DeepSpeech did; both score <s> and </s>).
pyctcdecode's labels are harken's symbols in order, then "" for the blank (harken's last class).

The searches differ in pruning and in words outside the vocabulary (harken cannot spell them, the peer
charges unk_score_offset -10), so each configuration is run under three pruning modes (--pruning):
  own     each decoder's defaults: harken's BeamSettings() (every label each frame: cutoff_prob 1.0,
          cutoff_top_n 300; its beam_threshold, printed in the header), pyctcdecode's (labels under
          token_min_logp -5 skipped unless a frame's best, beams under beam_prune_logp -10 dropped).
  narrow  both with pyctcdecode's pruning: harken gets beam_threshold 10 and the labels under -5 (but a
          frame's best) set to -1e30 before the search (done inside the timed call).
  wide    both with DeepSpeech-like pruning: every label, beams more than 25 below the best dropped
          (harken beam_threshold 25; pyctcdecode beam_prune_logp -25, token_min_logp -inf).

A slow peer configuration decodes utterances in order until --peer_seconds have passed; WERs are then
compared on that subset (column n). Each utterance is decoded --repeat times and its fastest time kept
(the machine is shared). Prints a markdown table: frames per second (total frames / total decode time),
the ratio harken / peer, and WER of each on the same utterances.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harken import audio, checkpoint, features, manifest, metrics
from harken.alphabet import Alphabet
from harken.decoder import BeamSettings, Decoder, greedy
from harken.scorer import Scorer

PEER_DEFAULTS = {"beam_prune_logp": -10.0, "token_min_logp": -5.0}  # pyctcdecode 0.5's defaults


def log_probs_of(
    checkpoint_dir: Path, samples: Sequence[manifest.Sample]
) -> tuple[Alphabet, float, list[np.ndarray]]:
    """(alphabet, seconds per frame, every sample's log-probs [time, n_classes] as float32)."""
    loaded = checkpoint.load_model(checkpoint_dir)
    cfg = loaded.dims.features
    model = loaded.model.eval()
    out = []
    with torch.inference_mode():
        for sample in samples:
            wave = torch.from_numpy(audio.read(sample.path, cfg.audio_sample_rate))
            windows = features.utterance_windows(wave, cfg).float()  # [1, time, n_input]
            log_probs, _, _ = model(windows)
            out.append(np.ascontiguousarray(log_probs[0].numpy(), dtype=np.float32))
    return loaded.alphabet, cfg.feature_win_step / 1000, out


def token_floor(log_probs: np.ndarray, floor: float) -> np.ndarray:
    """pyctcdecode's token_min_logp: labels under ``floor`` made impossible, unless a frame's best."""
    keep = (log_probs >= floor) | (log_probs == log_probs.max(axis=1, keepdims=True))
    return np.where(keep, log_probs, np.float32(-1e30))


def timed(
    decode: Callable[[np.ndarray], str],
    utterances: Sequence[np.ndarray],
    repeat: int,
    budget: float = math.inf,
) -> tuple[list[str], int, float]:
    """Decode in order until ``budget`` seconds have gone by: (texts, frames decoded, decode seconds).

    Each utterance's fastest of ``repeat`` runs counts (one run when a run takes over 0.1 s)."""
    decode(utterances[0])  # warm-up: first touch of the LM's pages, lazily built tables
    texts: list[str] = []
    frames, elapsed, spent = 0, 0.0, 0.0
    for log_probs in utterances:
        best = math.inf
        for attempt in range(repeat):
            start = time.perf_counter()
            text = decode(log_probs)
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
            if took > 0.1 or attempt == repeat - 1:
                break
        elapsed += best
        texts.append(" ".join(text.split()))
        frames += len(log_probs)
        if spent >= budget:
            break
    return texts, frames, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint_dir", type=Path, required=True)
    parser.add_argument("--test_files", required=True)
    parser.add_argument("--scorer", type=Path, required=True, help="a .scorer (harken's or DeepSpeech's)")
    parser.add_argument("--limit", type=int, default=0, help="first N test utterances (0: all)")
    parser.add_argument("--beams", default="100,500", help="comma-separated beam widths")
    parser.add_argument("--pruning", default="own,narrow,wide", help="modes: own, narrow, wide")
    parser.add_argument("--lm", default="no,yes", help="without / with the scorer: no, yes")
    parser.add_argument("--alpha", type=float, default=None, help="default: the scorer's")
    parser.add_argument("--beta", type=float, default=None, help="default: the scorer's")
    parser.add_argument("--repeat", type=int, default=3, help="runs per utterance, the fastest counts")
    parser.add_argument("--peer_seconds", type=float, default=60.0, help="time budget per peer config")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from pyctcdecode import build_ctcdecoder  # the peer, imported late: bench-only

    samples = manifest.read_manifests(args.test_files, args.limit)
    references = [" ".join(s.transcript.split()) for s in samples]
    alphabet, step, utterances = log_probs_of(args.checkpoint_dir, samples)
    total_frames = sum(len(u) for u in utterances)
    scorer = Scorer(args.scorer, alphabet)
    alpha = scorer.alpha if args.alpha is None else args.alpha
    beta = scorer.beta if args.beta is None else args.beta
    unigrams = scorer.vocabulary[:-1]  # without <unk>
    labels = [*alphabet.symbols, ""]
    assert len(labels) == alphabet.n_classes and alphabet.blank == alphabet.n_classes - 1
    print(
        f"{len(utterances)} utterances, {total_frames:,} frames ({total_frames * step:.0f} s of audio), "
        f"{alphabet.n_classes} classes; scorer {args.scorer} ({len(unigrams):,} words, "
        f"alpha {alpha:.4g}, beta {beta:.4g}); one thread, fastest of {args.repeat} per utterance; "
        f"harken's default beam_threshold {BeamSettings().beam_threshold} (None: the decoder's choice)"
    )

    texts, frames, seconds = timed(
        lambda lp: greedy(torch.from_numpy(lp), len(lp), alphabet).text, utterances, args.repeat
    )
    rows = [
        f"| greedy (reference) | — | — | {frames / seconds:,.0f} | — | — | {len(texts)} | "
        f"{metrics.wer(references, texts):.2%} | — | — |"
    ]
    peers = {
        "no": build_ctcdecoder(labels),
        "yes": build_ctcdecoder(
            labels, kenlm_model_path=str(args.scorer), unigrams=unigrams, alpha=alpha, beta=beta
        ),
    }
    floor = PEER_DEFAULTS["token_min_logp"]
    for mode in args.pruning.split(","):
        if mode not in ("own", "narrow", "wide"):
            parser.error(f"--pruning: {mode!r} is not own, narrow or wide")
        harken_settings: dict[str, Any] = {
            "narrow": {"beam_threshold": 10.0},
            "wide": {"beam_threshold": 25.0},
        }.get(mode, {})
        peer_options = (
            {"beam_prune_logp": -25.0, "token_min_logp": -math.inf} if mode == "wide" else PEER_DEFAULTS
        )
        for with_lm in args.lm.split(","):
            for beam in (int(b) for b in args.beams.split(",")):
                settings = BeamSettings(beam_width=beam, alpha=alpha, beta=beta, **harken_settings)
                ours = Decoder(alphabet, settings, scorer if with_lm == "yes" else None)
                if mode == "narrow":
                    h_texts, h_frames, h_seconds = timed(
                        lambda lp, d=ours: d.decode(token_floor(lp, floor))[0].text, utterances, args.repeat
                    )
                else:
                    h_texts, h_frames, h_seconds = timed(
                        lambda lp, d=ours: d.decode(lp)[0].text, utterances, args.repeat
                    )
                options = {"beam_width": beam, **peer_options}
                p_texts, p_frames, p_seconds = timed(
                    lambda lp, d=peers[with_lm], o=options: d.decode(lp, **o),
                    utterances, args.repeat, args.peer_seconds,
                )  # fmt: skip
                n = len(p_texts)
                h_fps, p_fps = h_frames / h_seconds, p_frames / p_seconds
                same = sum(a == b for a, b in zip(h_texts, p_texts, strict=False))
                rows.append(
                    f"| {mode} | {with_lm} | {beam} | {h_fps:,.0f} | {p_fps:,.0f} | {h_fps / p_fps:.1f}× | "
                    f"{n}{'' if n == len(utterances) else ' (subset)'} | "
                    f"{metrics.wer(references[:n], h_texts[:n]):.2%} | "
                    f"{metrics.wer(references[:n], p_texts):.2%} | {same}/{n} |"
                )
                print(
                    f"  {mode} pruning, LM {with_lm}, beam {beam}: harken {h_seconds:.3f} s for "
                    f"{h_frames:,} frames (WER {metrics.wer(references, h_texts):.2%} on all), "
                    f"peer {p_seconds:.3f} s for {p_frames:,} frames",
                    flush=True,
                )
    print()
    print("| pruning | LM | beam | harken frames/s | pyctcdecode frames/s | harken / peer | n | "
          "harken WER | pyctcdecode WER | same text |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
