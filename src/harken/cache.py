"""The feature cache (``--feature_cache DIR``, as DeepSpeech had): MFCC frames kept on disk after the
first epoch, so later epochs skip decoding, resampling and the front end.

An entry is keyed by the audio file's absolute path, size and modification time and by the feature
settings, so a changed file or other settings never read a stale entry; entries are written atomically
(temporary file, rename), so worker processes may fill the cache at the same time. Augmented features
are never cached: they differ every epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from harken import audio
from harken.config import FeatureConfig

VERSION = 1  # of the front end's output; raising it retires every entry


class FeatureCache:
    def __init__(self, directory: str | Path, config: FeatureConfig) -> None:
        self.directory = Path(directory)
        settings = json.dumps(dataclasses.asdict(config), sort_keys=True)
        self.tag = hashlib.sha1(f"{VERSION}|{settings}".encode()).hexdigest()[:16]
        self.warned = False

    def _entry(self, path: Path) -> Path | None:
        found = audio.fingerprint(path)  # a file, a member of a tar shard, or an object in storage
        if found is None:
            return None
        key = hashlib.sha1(f"{found}|{self.tag}".encode())
        digest = key.hexdigest()
        return self.directory / digest[:2] / f"{digest}.npy"

    def load(self, path: Path) -> torch.Tensor | None:
        """The cached frames [time, n_mfcc] of ``path``, or None."""
        entry = self._entry(path)
        if entry is None or not entry.is_file():
            return None
        try:
            return torch.from_numpy(np.load(entry, allow_pickle=False))
        except (OSError, ValueError):
            return None  # a damaged entry is computed again (and replaced)

    def store(self, path: Path, frames: torch.Tensor) -> None:
        """Keep ``frames`` [time, n_mfcc] for ``path``; a full or read-only disk only costs the speed-up."""
        entry = self._entry(path)
        if entry is None:
            return
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, frames.numpy(), allow_pickle=False)
            os.replace(tmp, entry)
        except OSError as error:
            if not self.warned:
                print(f"warning: feature cache {self.directory}: {error.strerror or error}; going on without")
                self.warned = True
