"""Speech synthesis, offline, by espeak-ng: text, a voice, a rate and a pitch in, int16 samples out. The
synthetic corpus (harken.importers.synthetic), the export's check audio, the benchmarks and the tests
speak with it.

The pip package ``espeakng-loader`` ships ``libespeak-ng.so`` and its ``espeak-ng-data``; this module drives
the library through ``ctypes`` (the ``speak_lib.h`` API in ``AUDIO_OUTPUT_SYNCHRONOUS`` mode), so nothing is
downloaded and no ``espeak-ng`` binary is needed. A voice is an espeak-ng language voice plus a variant,
e.g. ``"en-us+f2"``: the language voice sets the accent, the variant (a file in
``espeak-ng-data/voices/!v``) the timbre and pitch.

espeak-ng keeps state between utterances, so ``Synthesizer`` loads the library afresh for each one: the
same text, voice, rate and pitch give the same samples every time.
"""

from __future__ import annotations

import _ctypes
import ctypes
import re
from typing import Any

import numpy as np

__all__ = ["Synthesizer"]

# speak_lib.h constants (ESPEAK_API_REVISION 12).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_SEED = 1  # espeak-ng's random numbers (the noise in voiced and fricative sounds)
_RATE_RANGE = (80, 450)  # espeakRATE_MINIMUM, espeakRATE_MAXIMUM (words per minute)
_PITCH_RANGE = (0, 100)


class _EspeakVoice(ctypes.Structure):
    """``espeak_VOICE`` from speak_lib.h."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, language string, NUL)*, NUL
        ("identifier", ctypes.c_char_p),  # file name under espeak-ng-data/voices or lang, e.g. "gmw/en-US"
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); return 0 to continue, 1 to abort.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _declare(lib: ctypes.CDLL) -> None:
    """Give the library's functions their C signatures (ctypes would otherwise guess ``int``)."""
    vp, cp, ci, cu = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint
    lib.espeak_Initialize.argtypes = [ci, ci, cp, ci]
    lib.espeak_Initialize.restype = ci
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [cp]
    lib.espeak_SetVoiceByName.restype = ci
    lib.espeak_GetCurrentVoice.argtypes = []
    lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_EspeakVoice)
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_EspeakVoice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
    lib.espeak_SetParameter.argtypes = [ci, ci, ci]
    lib.espeak_SetParameter.restype = ci
    lib.espeak_Synth.argtypes = [cp, ctypes.c_size_t, cu, ci, cu, cu, vp, vp]
    lib.espeak_Synth.restype = ci
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = ci
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ci
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None


_LOADED: list[tuple[ctypes.CDLL, int]] = []  # the one loaded library (all Synthesizers share it)


def _load() -> tuple[ctypes.CDLL, int]:
    """The library, loaded and initialised, its random numbers seeded; and its sample rate."""
    try:
        import espeakng_loader

        library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
        lib = ctypes.CDLL(library)
    except (ImportError, OSError, RuntimeError) as error:
        raise RuntimeError(f"cannot load espeak-ng from espeakng-loader: {error}") from None
    _declare(lib)
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_DONT_EXIT)
    if rate <= 0:
        raise RuntimeError(f"espeak-ng failed to initialise with data at {data} (status {rate})")
    lib.espeak_ng_SetRandSeed(_SEED)
    return lib, rate


def _library(fresh: bool = False) -> tuple[ctypes.CDLL, int]:
    """The loaded library and its sample rate; ``fresh``: unloaded and loaded again first. espeak-ng keeps
    state between utterances (pitch flutter, filter memories) that no call resets, so an utterance depends
    on the ones before it unless the library starts from scratch."""
    if _LOADED and fresh:
        lib = _LOADED.pop()[0]
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)
    if not _LOADED:
        _LOADED.append(_load())
    return _LOADED[0]


class Synthesizer:
    """espeak-ng, loaded from ``espeakng-loader``, speaking one utterance at a time.

    The library keeps its state (voice, parameters, callback) per process, so every ``speak`` call sets all
    of it; several instances in one process work, but not from several threads at once.
    """

    def __init__(self) -> None:
        self.sample_rate: int = _library()[1]
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # kept referenced: the library holds a raw pointer
        self._voices: dict[str, str] | None = None
        self._variants: list[str] | None = None

    @property
    def _lib(self) -> ctypes.CDLL:
        return _library()[0]

    def _collect(self, wav: Any, count: int, _events: Any) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).astype(np.int16, copy=True))
        return 0

    def _list(self, spec: _EspeakVoice | None) -> list[_EspeakVoice]:
        array = self._lib.espeak_ListVoices(ctypes.byref(spec) if spec is not None else None)
        found, index = [], 0
        while array[index]:
            found.append(array[index].contents)
            index += 1
        return found

    def _voice_table(self) -> dict[str, str]:
        """Lower-cased accepted base names (file name, identifier, display name) -> file name."""
        if self._voices is None:
            table: dict[str, str] = {}
            for voice in self._list(None):
                identifier = (voice.identifier or b"").decode()
                short = identifier.rsplit("/", 1)[-1].lower()
                for key in (short, identifier.lower(), (voice.name or b"").decode().lower()):
                    table.setdefault(key, short)
            self._voices = table
        return self._voices

    def voices(self) -> list[str]:
        """Language voices, named as ``speak`` accepts them: ``"en"``, ``"en-us"``, ``"en-gb-x-rp"`` ..."""
        return sorted(set(self._voice_table().values()))

    def variants(self) -> list[str]:
        """Voice variants (``"m1"`` ... ``"f5"``, ``"klatt3"``, ``"Andy"`` ...), used as ``voice+variant``."""
        if self._variants is None:
            language = ctypes.c_char_p(b"variant")
            spec = _EspeakVoice(languages=ctypes.cast(language, ctypes.c_void_p))
            self._variants = sorted(
                (v.identifier or b"").decode().rsplit("/", 1)[-1] for v in self._list(spec)
            )
        return self._variants

    def _unknown(self, voice: str) -> ValueError:
        english = [name for name in self.voices() if name.startswith("en")]
        variants = [name for name in self.variants() if re.fullmatch(r"[mf]\d", name)]
        return ValueError(
            f"unknown espeak-ng voice {voice!r}; use LANGUAGE[+VARIANT] with a language voice such as "
            f"{', '.join(english)} and a variant (case-sensitive) such as {', '.join(variants)} "
            f"(all: Synthesizer().voices(), Synthesizer().variants())"
        )

    def check_voice(self, voice: str) -> None:
        """Raise ``ValueError`` unless ``voice`` names an installed language voice and variant."""
        base, plus, variant = voice.partition("+")
        if base.lower() not in self._voice_table() or (plus and variant not in self.variants()):
            raise self._unknown(voice)

    def _select(self, voice: str) -> None:
        self.check_voice(voice)
        if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise self._unknown(voice)
        # espeak-ng silently ignores a variant it cannot load; the identifier says whether it took.
        _, plus, variant = voice.partition("+")
        current = self._lib.espeak_GetCurrentVoice()
        identifier = (current.contents.identifier or b"").decode() if current else ""
        if plus and not identifier.endswith(f"+{variant}"):
            raise self._unknown(voice)

    def speak(self, text: str, voice: str, rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
        """Speak ``text``; return int16 mono samples and their sample rate (espeak-ng's own, 22050 Hz).

        ``rate`` is in words per minute (80-450), ``pitch`` 0-100 around the voice's own pitch (50 = as is).
        """
        if not text.strip():
            raise ValueError("nothing to speak: empty text")
        if not _RATE_RANGE[0] <= rate <= _RATE_RANGE[1]:
            raise ValueError(f"rate {rate} is outside {_RATE_RANGE[0]}-{_RATE_RANGE[1]} words per minute")
        if not _PITCH_RANGE[0] <= pitch <= _PITCH_RANGE[1]:
            raise ValueError(f"pitch {pitch} is outside {_PITCH_RANGE[0]}-{_PITCH_RANGE[1]}")
        lib = _library(fresh=True)[0]
        self._select(voice)
        lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        lib.espeak_SetSynthCallback(self._callback)
        self._chunks = []
        data = text.encode("utf-8")
        status = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK or lib.espeak_Synchronize() != _EE_OK:
            raise RuntimeError(f"espeak-ng failed to speak {text!r} with {voice!r} (status {status})")
        chunks, self._chunks = self._chunks, []
        if not chunks:
            raise RuntimeError(f"espeak-ng produced no audio for {text!r} with {voice!r}")
        return np.concatenate(chunks), self.sample_rate
