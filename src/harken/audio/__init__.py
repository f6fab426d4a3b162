"""Audio, one home for each concern:

- ``file``: reading any format libsndfile reads (whole, in blocks, or as far as a damaged file goes),
  headers (``info``), and the one writer of audio files (16-bit PCM WAV, atomically);
- ``pcm``: 16-bit PCM <-> float32 samples;
- ``resampler``: sample-rate conversion, of a whole array or of a stream fed in pieces;
- ``activity``: WebRTC's voice-activity detector;
- ``folder``: which files of a folder are audio (the suffixes, hidden files left out);
- ``synthesizer``: speech synthesis by espeak-ng.

Everything public is here too: ``from harken import audio; audio.read(path, 16000)``. Recordings inside tar
shards (``shard.tar#member``) are found by harken.shards.
"""

from harken.audio.activity import FRAME_MS, VAD_RATES, VoiceDetector, voice_detector
from harken.audio.file import (
    AudioError,
    AudioInfo,
    blocks,
    exists,
    fingerprint,
    info,
    name,
    read,
    wav_frames,
    write,
)
from harken.audio.folder import AUDIO_SUFFIXES, audio_files, hidden
from harken.audio.pcm import fit_length, from_pcm16, to_pcm16
from harken.audio.resampler import Resampler, resample
from harken.audio.synthesizer import Synthesizer

__all__ = [
    "AUDIO_SUFFIXES",
    "FRAME_MS",
    "VAD_RATES",
    "AudioError",
    "AudioInfo",
    "Resampler",
    "Synthesizer",
    "VoiceDetector",
    "audio_files",
    "blocks",
    "exists",
    "fingerprint",
    "fit_length",
    "from_pcm16",
    "hidden",
    "info",
    "name",
    "read",
    "resample",
    "to_pcm16",
    "voice_detector",
    "wav_frames",
    "write",
]
