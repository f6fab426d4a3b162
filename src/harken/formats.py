"""How a transcript is written out: the formats of ``harken transcribe`` (txt, json, srt, vtt, tsv) and
the bodies of the service's answers (harken's JSON; OpenAI's json, verbose_json, text, srt, vtt), in one
place so that the command and the service give the same text for the same transcript.

Plain data in, plain data out: the service wraps these in its HTTP responses (``MEDIA_TYPES``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harken.transcribe import Transcript

OUTPUT_FORMATS = ("txt", "json", "srt", "vtt", "tsv")  # harken transcribe --output_format
OPENAI_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")  # OpenAI's response_format
MEDIA_TYPES = {  # the formats written as text, as the service sends them ("text": OpenAI's name for txt)
    "txt": "text/plain; charset=utf-8",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
}


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}{separator}{millis % 1000:03d}"


def segments_json(result: Transcript) -> list[dict[str, Any]]:
    """The segments as JSON objects (start, end, text, words, confidence, alternatives): the same in
    ``harken transcribe --output_format json`` and in the service's JSON."""
    return [asdict(segment) for segment in result.segments]


def render(result: Transcript, output_format: str) -> str:
    """A transcript as txt, json, srt, vtt or tsv text."""
    if output_format == "txt":
        return result.text + "\n"
    if output_format == "json":
        body = {"path": str(result.path), "duration": result.duration, "text": result.text,
                "segments": segments_json(result)}  # fmt: skip
        if result.warning:
            body["warning"] = result.warning  # only part of the file could be read
        return json.dumps(body, ensure_ascii=False, indent=2) + "\n"
    if output_format == "tsv":
        rows = [f"{round(s.start * 1000)}\t{round(s.end * 1000)}\t{s.text}" for s in result.segments]
        return "start\tend\ttext\n" + "".join(row + "\n" for row in rows)
    if output_format == "srt":
        blocks = [f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text}\n"
                  for n, s in enumerate(result.segments, start=1)]  # fmt: skip
        return "\n".join(blocks)
    if output_format == "vtt":
        blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text}\n" for s in result.segments]
        return "WEBVTT\n\n" + "\n".join(blocks)
    raise ValueError(f"--output_format {output_format!r}: expected one of {', '.join(OUTPUT_FORMATS)}")


def render_text(result: Transcript, output_format: str) -> str:
    """A transcript in one of ``MEDIA_TYPES``' formats (OpenAI's "text" is txt)."""
    return render(result, "txt" if output_format == "text" else output_format)


def candidates(result: Transcript) -> list[dict[str, Any]]:
    """The transcript and its confidence; for a file decoded in one piece, then the next-best ones
    (candidate_transcripts)."""
    best = {"text": result.text, "confidence": sum(s.confidence for s in result.segments)}
    if len(result.segments) != 1:
        return [best]
    others = getattr(result.segments[0], "alternatives", ())
    return [best, *({"text": a.text, "confidence": a.confidence} for a in others)]


def harken_json(result: Transcript, model_name: str, warning: str = "") -> dict[str, Any]:
    """The service's JSON answer (POST /v1/transcribe): ``warning`` first when only part of the upload
    could be read (the caller words it: the service names the file "the upload")."""
    segments = segments_json(result)
    return {
        **({"warning": warning} if warning else {}),
        "text": result.text,
        "duration": result.duration,
        "model": model_name,
        "candidates": candidates(result),
        "segments": segments,
        "words": [word for segment in segments for word in segment["words"]],
    }


def openai_json(result: Transcript) -> dict[str, Any]:
    """OpenAI's response_format json."""
    return {"text": result.text}


def openai_verbose_json(result: Transcript, language: str, step: float) -> dict[str, Any]:
    """OpenAI's response_format verbose_json; ``step``: the model's frame step in seconds (a segment's
    avg_logprob is its confidence per frame)."""
    segments = [
        {"id": index, "seek": 0, "start": s.start, "end": s.end, "text": s.text, "tokens": [],
         "temperature": 0.0, "avg_logprob": s.confidence / max(1.0, (s.end - s.start) / step),
         "compression_ratio": 1.0, "no_speech_prob": 0.0}
        for index, s in enumerate(result.segments)
    ]  # fmt: skip
    words = [asdict(word) for segment in result.segments for word in segment.words]
    return {"task": "transcribe", "language": language, "duration": result.duration,
            "text": result.text, "segments": segments, "words": words}  # fmt: skip


__all__ = [
    "MEDIA_TYPES",
    "OPENAI_FORMATS",
    "OUTPUT_FORMATS",
    "candidates",
    "harken_json",
    "openai_json",
    "openai_verbose_json",
    "render",
    "render_text",
    "segments_json",
]
