"""int8 accuracy on a real model: harken's int8 export against float, LiteRT and the previous export.

    .venv/bin/python bench/int8.py

The model is ArmSpeech (Coqui STT, n_hidden 2048, hybrid int8 `.tflite`), imported and exported as
bench/rtf.py does. Two sets of Armenian clips spoken by espeak-ng, built differently:

- tune: what the int8 scheme was developed on: the `hy` voice as is, sentences A, two a clip (3-4 s);
- held-out: sentences B, `hyw` and `hy` at other rates and pitches, one or two a clip (1.4-5 s), at
  levels from full scale down to 3 % (-30 dB).

For each set, greedy transcripts (the comparison is of the acoustic model) from LiteRT's builtin kernels
(DeepSpeech's client: the reference), LiteRT with XNNPACK, harken float, harken's int8 export, and
onnxruntime's `quantize_dynamic` of the same float graph (what `harken export --quantize int8` wrote
before): CER against the spoken text, CER against LiteRT builtin, frame argmax agreement with harken float
(all frames, and the frames where float is confident). Then the int8 export run as a stream: 20 ms and
320 ms calls against one whole-file call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime
import rtf
import torch

from harken import audio, checkpoint, decoder, features, metrics
from harken.audio import Synthesizer
from harken.interop.tflite import run_litert

A = ("բարև ձեզ ինչպես եք", "այսօր եղանակը շատ լավ է", "ես սիրում եմ իմ քաղաքը", "մենք գնում ենք տուն",
     "երևանը հայաստանի մայրաքաղաքն է", "նա կարդում է հետաքրքիր գիրք", "վաղը մենք կգնանք ծովափ",
     "երեխաները խաղում են բակում")  # fmt: skip
B = ("իմ եղբայրը աշխատում է հիվանդանոցում", "խնդրում եմ բացեք պատուհանը", "սուրճը շատ տաք է",
     "գնացքը ուշանում է տասը րոպե", "մայրիկս պատրաստում է համեղ ճաշ", "արարատ լեռը երևում է այստեղից",
     "շունը վազում է այգում", "մենք պետք է խոսենք այդ մասին", "նամակը ուղարկեցի երեկ երեկոյան",
     "քույրս սովորում է համալսարանում")  # fmt: skip
VARIANTS = (
    ("hyw", 175, 50, 1.0),
    ("hyw", 140, 30, 0.1),
    ("hy", 210, 70, 0.03),
    ("hyw", 160, 60, 0.5),
    ("hy", 150, 40, 0.2),
)  # fmt: skip  (voice, words per minute, pitch, level)


def clip(synthesizer: Synthesizer, texts: tuple[str, ...], voice: str, rate: int, pitch: int, level: float):
    pieces = []
    for text in texts:
        pcm, sample_rate = synthesizer.speak(text, voice, rate, pitch)
        pieces.append(audio.resample(audio.from_pcm16(pcm), sample_rate, 16000))
    return audio.from_pcm16(audio.to_pcm16(np.concatenate(pieces) * level)), " ".join(texts)


def clip_sets() -> dict[str, list[tuple[np.ndarray, str]]]:
    synthesizer = Synthesizer()
    tune = [clip(synthesizer, A[i : i + 2], "hy", 175, 50, 1.0) for i in range(0, len(A), 2)]
    held = []
    for k, i in enumerate(range(0, len(B), 2)):
        voice, rate, pitch, level = VARIANTS[k]
        held.append(clip(synthesizer, B[i : i + 2], voice, rate, pitch, level))
        held.append(clip(synthesizer, B[i : i + 1], VARIANTS[(k + 1) % 5][0], rate, pitch, level))
    return {"tune": tune, "held-out": held}


def run(session: onnxruntime.InferenceSession, windows: np.ndarray, step: int | None = None) -> np.ndarray:
    """windows [1, time, n_input] -> log_probs [time, n_classes], in calls of ``step`` frames (None: one)."""
    hidden = session.get_inputs()[1].shape[2]
    h = c = np.zeros((1, 1, hidden), np.float32)
    step = step or windows.shape[1]
    pieces = []
    for start in range(0, windows.shape[1], step):
        out, h, c = session.run(None, {"windows": windows[:, start : start + step], "h0": h, "c0": c})
        pieces.append(out[0])
    return np.concatenate(pieces)


Outputs = dict[str, list[np.ndarray]]  # runtime -> log_probs [time, n_classes] of each clip


def report(outputs: Outputs, spoken: list[str], text: Callable[[np.ndarray], str]) -> None:
    """One line per runtime: CER against the text and LiteRT, frame argmax agreement with harken float."""
    litert = [text(lp) for lp in outputs["LiteRT builtin"]]
    reference = outputs["harken float"]
    sure = np.concatenate([np.exp(f).max(-1) >= 0.9 for f in reference])  # frames where float is confident
    print(
        f"{'runtime':16s} {'CER vs text':>11s} {'vs LiteRT':>9s} {'argmax = float':>14s} {'(confident)':>11s}"
    )
    for name, log_probs in outputs.items():
        ours = [text(lp) for lp in log_probs]
        same = np.concatenate(
            [a.argmax(-1) == b.argmax(-1) for a, b in zip(log_probs, reference, strict=True)]
        )
        print(f"{name:16s} {metrics.cer(spoken, ours):11.3f} {metrics.cer(litert, ours):9.3f} "
              f"{same.mean():14.1%} {same[sure].mean():8.1%}")  # fmt: skip


def main() -> None:
    float_path, int8_path = rtf.exported()
    loaded = checkpoint.load_model(rtf.WORK / "ckpt")
    model, cfg, alphabet = loaded.model.float().eval(), loaded.dims.features, loaded.alphabet
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    paths = {"harken int8": int8_path, "previous int8": rtf.previous_export(float_path)}
    sessions = {name: onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in paths.items()}  # fmt: skip

    def text(log_probs: np.ndarray) -> str:
        return " ".join(decoder.greedy(torch.from_numpy(log_probs), len(log_probs), alphabet).text.split())

    streams: list[tuple[int, float, float]] = []  # (frames a call, max |Δ log-prob|, argmax agreement)
    for set_name, clips in clip_sets().items():
        outputs: Outputs = {}
        for samples, _ in clips:
            windows = features.utterance_windows(torch.from_numpy(samples), cfg)  # [1, time, n_input]
            with torch.inference_mode():
                outputs.setdefault("harken float", []).append(model(windows)[0][0].numpy())
            for builtin, name in ((True, "LiteRT builtin"), (False, "LiteRT XNNPACK")):
                probabilities = run_litert(rtf.TFLITE, windows.numpy(), threads=2, builtin=builtin)
                outputs.setdefault(name, []).append(np.log(probabilities + 1e-30))
            for name, session in sessions.items():
                outputs.setdefault(name, []).append(run(session, windows.numpy()))
            whole = outputs["harken int8"][-1]
            for step in (1, 16):
                stepped = run(sessions["harken int8"], windows.numpy(), step)
                agree = float((stepped.argmax(-1) == whole.argmax(-1)).mean())
                streams.append((step, float(np.abs(stepped - whole).max()), agree))
        seconds = sum(len(s) for s, _ in clips) / 16000
        print(f"\n{set_name}: {len(clips)} clips, {seconds:.0f} s")
        report(outputs, [t for _, t in clips], text)
    for step in (1, 16):
        rows = [(d, a) for s, d, a in streams if s == step]
        print(
            f"int8 in {step * 20} ms calls vs one call: max |Δ log-prob| {max(d for d, _ in rows):.1e}, "
            f"argmax agreement {min(a for _, a in rows):.1%} (worst clip)"
        )


if __name__ == "__main__":
    main()
