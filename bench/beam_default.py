"""The decoder's default without a scorer, chosen by measurement: WER and decoding cost of greedy and of
beam widths up to DeepSpeech's 500, on the same log-probs, against DeepSpeech's default (beam 500).

    .venv/bin/python bench/beam_default.py --checkpoint_dir runs/demo/checkpoints \\
        --test_files runs/demo/corpus/test.csv[,held-out.csv ...] [--beams 1,8,16,32,100,500]

Log-probabilities are computed once per utterance with the checkpoint (torch); only decoding is timed,
each utterance's fastest of --repeat runs. Every CSV is reported on its own (tune on one, read the other:
a held-out set built differently). Prints, per CSV and width: WER, CER, decode milliseconds per second of
audio, and the cost and WER change against beam 500.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from decode import log_probs_of, timed  # noqa: E402  (bench/decode.py: the same log-probs and timing)

from harken import manifest, metrics  # noqa: E402
from harken.decoder import BeamSettings, Decoder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint_dir", type=Path, required=True)
    parser.add_argument("--test_files", required=True, help="CSVs, comma-separated: each reported apart")
    parser.add_argument("--beams", default="1,8,16,32,100,500")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    widths = [int(w) for w in args.beams.split(",")]
    for csv in args.test_files.split(","):
        samples = manifest.read_csv(Path(csv))
        alphabet, step, utterances = log_probs_of(args.checkpoint_dir, samples)
        seconds = sum(len(u) for u in utterances) * step
        references = [" ".join(s.transcript.split()) for s in samples]
        print(f"\n{csv}: {len(samples)} utterances, {seconds:.0f} s of audio")
        print("| beam | WER | CER | decode ms / s of audio | cost vs 500 | WER vs 500 |")
        print("|---:|---:|---:|---:|---:|---:|")
        rows = {}
        for width in widths:
            search = Decoder(alphabet, BeamSettings(beam_width=width))
            texts, _, elapsed = timed(lambda lp, d=search: d.decode(lp)[0].text, utterances, args.repeat)
            wer = metrics.wer(references, texts)
            cer = metrics.cer(references, texts)
            rows[width] = (wer, cer, 1000 * elapsed / seconds)
        base = rows.get(500)
        for width, (wer, cer, ms) in rows.items():
            cost = f"{ms / base[2]:.3f}x" if base else "-"
            change = f"{100 * (wer - base[0]):+.2f} pts" if base else "-"
            name = "greedy" if width == 1 else str(width)
            print(f"| {name} | {wer:.2%} | {cer:.2%} | {ms:.2f} | {cost} | {change} |")


if __name__ == "__main__":
    main()
