"""The output formats of harken transcribe and the service's answers (harken.formats)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from harken import formats, transcribe
from harken.formats import harken_json, openai_json, openai_verbose_json, render, render_text
from harken.transcribe import Alternative, Segment, Transcript, Word

WORDS = (Word("turn", 0.5, 0.8), Word("on", 0.9, 1.1))
RESULT = Transcript(
    Path("a.wav"), "turn on then off", 3725.5,
    segments=(Segment(0.5, 1.2, "turn on", WORDS, -3.0), Segment(3723.25, 3725.5, "then off", (), -2.0)),
)  # fmt: skip


def test_output_formats_parse() -> None:
    import srt
    import webvtt

    subtitles = list(srt.parse(render(RESULT, "srt")))
    assert [s.content for s in subtitles] == ["turn on", "then off"]
    assert subtitles[1].start.total_seconds() == 3723.25 and subtitles[1].end.total_seconds() == 3725.5
    captions = webvtt.from_buffer(io.StringIO(render(RESULT, "vtt")))
    assert [c.text for c in captions] == ["turn on", "then off"] and captions[1].start == "01:02:03.250"
    body = json.loads(render(RESULT, "json"))
    assert body["segments"][0]["words"][1] == {"word": "on", "start": 0.9, "end": 1.1}
    assert render(RESULT, "tsv").splitlines() == [
        "start\tend\ttext",
        "500\t1200\tturn on",
        "3723250\t3725500\tthen off",
    ]
    assert render(RESULT, "txt") == "turn on then off\n"


def test_the_formats_are_listed_once() -> None:
    assert transcribe.render is render and transcribe.OUTPUT_FORMATS is formats.OUTPUT_FORMATS
    with pytest.raises(ValueError, match=r"--output_format 'text': expected one of txt, json, srt, vtt, tsv"):
        render(RESULT, "text")
    assert render_text(RESULT, "text") == render(RESULT, "txt")
    assert set(formats.MEDIA_TYPES) == {"txt", "text", "srt", "vtt", "tsv"}


def test_the_service_json_has_the_command_json_segments() -> None:
    one = Transcript(
        Path("/tmp/upload-1"), "turn on", 1.5, segments=(Segment(0.5, 1.2, "turn on", WORDS, -3.0,
        (Alternative("turn off", -4.0),)),), warning="/tmp/upload-1: truncated",
    )  # fmt: skip
    body = harken_json(one, "m.onnx", "the upload: truncated")
    assert list(body) == ["warning", "text", "duration", "model", "candidates", "segments", "words"]
    assert body["warning"] == "the upload: truncated" and "warning" not in harken_json(one, "m.onnx")
    assert json.loads(json.dumps(body["segments"])) == json.loads(render(one, "json"))["segments"]
    assert body["candidates"] == [
        {"text": "turn on", "confidence": -3.0},
        {"text": "turn off", "confidence": -4.0},
    ]
    assert body["words"] == [
        {"word": "turn", "start": 0.5, "end": 0.8},
        {"word": "on", "start": 0.9, "end": 1.1},
    ]
    several = harken_json(RESULT, "m.onnx")["candidates"]
    assert several == [{"text": "turn on then off", "confidence": -5.0}]  # no next-best for several pieces


def test_openai_shapes() -> None:
    assert openai_json(RESULT) == {"text": "turn on then off"}
    body = openai_verbose_json(RESULT, "en", 0.02)
    assert body["task"] == "transcribe" and body["language"] == "en" and body["duration"] == 3725.5
    assert [s["id"] for s in body["segments"]] == [0, 1]
    assert body["segments"][0]["avg_logprob"] == pytest.approx(-3.0 / 35)  # per 20 ms frame
    assert body["words"][1] == {"word": "on", "start": 0.9, "end": 1.1}
