"""DeepSpeech's TensorFlow checkpoints in (``best_dev-N.index`` + ``.data-*``), read without TensorFlow.

The format (TensorFlow's tensor bundle, "V2" checkpoints): the ``.index`` file is a LevelDB-style table
(a 48-byte footer with the index block's handle and the magic number, blocks of prefix-compressed keys
with restart points, each block followed by a type byte and a masked CRC-32C) that maps every tensor name
to a serialised ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC-32C of the bytes);
the empty key holds the ``BundleHeaderProto`` (number of shards, endianness). The tensors' raw bytes lie
in ``<prefix>.data-NNNNN-of-MMMMM``. The two protobuf messages are decoded by hand from the wire format,
so neither TensorFlow nor protobuf is needed.

DeepSpeech 0.6-0.9 (and Coqui STT) name their variables ``layer_1/weights``, ``layer_1/bias`` ...
``layer_6`` and ``cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell/{kernel,bias}`` whichever
LSTM they trained with (LSTMBlockFusedCell, LSTMCell or CuDNN, whose saver writes this canonical form):
a kernel [n_input + n_hidden, 4 n_hidden] over concat(input, h) with TensorFlow's gate order i, j, f, o
and forget bias 0. DeepSpeech 0.5 wrote ``lstm_fused_cell/*`` (or ``rnn/lstm_cell/*``) and ran them with
TensorFlow's default forget bias 1.0, which is folded into the bias here. Adam slots, ``global_step``,
``learning_rate`` and ``beta*_power`` are ignored. A checkpoint carries no alphabet: it comes from
``--alphabet_config_path``, an ``alphabet.txt`` beside the checkpoint, or the English default.
"""

from __future__ import annotations

import codecs
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harken.alphabet import Alphabet, AlphabetError
from harken.config import FeatureConfig, ModelConfig
from harken.dims import ModelDims
from harken.interop.crc32c import crc32c, unmask
from harken.interop.tflite import ImportedModel, InteropError, gates_tf_to_torch

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic number
BLOCK_TRAILER = 5  # compression type byte + masked CRC-32C
DTYPES = {  # TensorFlow's DataType enum -> numpy (little-endian; a big-endian bundle is swapped)
    1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2", 19: "<f2",
    22: "<u4", 23: "<u8",
}  # fmt: skip
STATE_FILES = ("best_dev_checkpoint", "checkpoint")  # DeepSpeech's evaluation order: best dev, then newest


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are: a decoded ``BundleEntryProto``."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int | None  # masked CRC-32C as stored
    sliced: bool


# -- protobuf wire format ---------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(message: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: ints for varint/fixed fields, bytes for the others."""
    pos = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        field, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(message):
                raise ValueError("truncated fixed field")
            value = int.from_bytes(message[pos : pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(message, pos)
            if pos + length > len(message):
                raise ValueError("truncated length-delimited field")
            value, pos = message[pos : pos + length], pos + length
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, value


def _int64(value: int | bytes) -> int:
    assert isinstance(value, int)
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(message: bytes) -> tuple[int, ...]:
    """TensorShapeProto: repeated Dim dim = 2 (Dim: int64 size = 1); bool unknown_rank = 3."""
    dims = []
    for field, value in _fields(message):
        if field == 2 and isinstance(value, bytes):
            size = next((_int64(v) for f, v in _fields(value) if f == 1), 0)
            dims.append(size)
        elif field == 3 and value:
            raise ValueError("a tensor of unknown rank")
    return tuple(dims)


def _entry(message: bytes) -> TensorEntry:
    """BundleEntryProto: dtype 1, shape 2, shard_id 3, offset 4, size 5, crc32c 6 (fixed32), slices 7."""
    values: dict[int, int | bytes] = {}
    sliced = False
    for field, value in _fields(message):
        sliced |= field == 7
        values[field] = value
    shape = values.get(2, b"")
    return TensorEntry(
        dtype=int(values.get(1, 0)),
        shape=_shape(shape if isinstance(shape, bytes) else b""),
        shard=_int64(values.get(3, 0)),
        offset=_int64(values.get(4, 0)),
        size=_int64(values.get(5, 0)),
        crc=int(values[6]) if 6 in values else None,
        sliced=sliced,
    )


# -- the .index table -------------------------------------------------------------------------------


def _block(data: bytes, handle: tuple[int, int], path: Path) -> bytes:
    """The contents of the block at (offset, size), its type byte and checksum checked."""
    offset, size = handle
    end = offset + size + BLOCK_TRAILER
    if end > len(data):
        raise InteropError(f"{path} is truncated: a block ends at byte {end}, the file has {len(data)}")
    contents, kind = data[offset : offset + size], data[offset + size]
    if kind != 0:
        name = {1: "snappy"}.get(kind, f"type {kind}")
        raise InteropError(
            f"{path}: its blocks are {name}-compressed (TensorFlow 1.1 and older wrote such checkpoints); "
            "harken reads uncompressed ones"
        )
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if unmask(stored) != crc32c(data[offset : offset + size + 1]):
        raise InteropError(f"{path} is damaged: checksum mismatch in the block at byte {offset}")
    return contents


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of one block: each key shares a prefix with the previous one."""
    if len(block) < 4:
        raise ValueError("block too short")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (restarts + 1)
    if limit < 0:
        raise ValueError("bad restart count")
    key, pos = b"", 0
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > limit:
            raise ValueError("entry overruns its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _handle(data: bytes, pos: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(data, pos)
    size, pos = _varint(data, pos)
    return (offset, size), pos


def read_index(path: Path) -> tuple[dict[int, int | bytes], dict[str, TensorEntry]]:
    """The bundle header's fields and every tensor's entry, from a ``.index`` file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InteropError(f"{path}: cannot read ({error.strerror})") from None
    if len(data) < FOOTER_SIZE:
        raise InteropError(f"{path} is truncated or not a TensorFlow checkpoint index ({len(data)} bytes)")
    if struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
        raise InteropError(
            f"{path} is truncated or not a TensorFlow checkpoint index (no table magic number at its end)"
        )
    try:
        _, pos = _handle(data, len(data) - FOOTER_SIZE)  # the metaindex block: empty in TensorFlow's tables
        index_handle, _ = _handle(data, pos)
        header: dict[int, int | bytes] | None = None
        entries: dict[str, TensorEntry] = {}
        for _, value in _block_entries(_block(data, index_handle, path)):
            block_handle, _ = _handle(value, 0)
            for key, message in _block_entries(_block(data, block_handle, path)):
                if key == b"":
                    header = dict(_fields(message))
                else:
                    entries[key.decode("utf-8")] = _entry(message)
    except (ValueError, UnicodeDecodeError) as error:
        raise InteropError(f"{path} is damaged or truncated ({error})") from None
    if header is None:
        raise InteropError(f"{path}: no bundle header; not a TensorFlow V2 checkpoint")
    return header, entries


# -- finding and reading a checkpoint ---------------------------------------------------------------


def _state_file_prefix(state: Path) -> Path | None:
    """The ``model_checkpoint_path`` a ``checkpoint`` state file names: beside the file (DeepSpeech wrote
    absolute paths of the machine it trained on), else where the path points."""
    text = state.read_bytes()
    match = re.search(rb'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', text, re.M)
    if not match:
        return None
    named = Path(codecs.escape_decode(match.group(1))[0].decode("utf-8", "replace"))
    for candidate in (state.parent / named.name, named if named.is_absolute() else state.parent / named):
        if Path(f"{candidate}.index").is_file():
            return candidate
    return None


def _step(path: Path) -> int:
    match = re.search(r"-(\d+)$", path.name[: -len(".index")])
    return int(match.group(1)) if match else -1


def resolve_prefix(path: Path) -> Path | None:
    """The checkpoint prefix ``path`` stands for (a directory, ``x.index``, ``x.data-*`` or ``x``)."""
    if path.is_dir():
        for name in STATE_FILES:
            if (path / name).is_file() and (found := _state_file_prefix(path / name)) is not None:
                return found
        indexes = sorted(path.glob("*.index"), key=lambda p: (p.name.startswith("best_dev-"), _step(p)))
        return Path(str(indexes[-1])[: -len(".index")]) if indexes else None
    if path.suffix == ".index" and path.is_file():
        return path.with_suffix("")
    match = re.match(r"^(.*)\.data-\d{5}-of-\d{5}$", str(path))
    if match and Path(f"{match.group(1)}.index").is_file():
        return Path(match.group(1))
    return path if Path(f"{path}.index").is_file() else None


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` looks like a TensorFlow checkpoint (directory, prefix or one of its files)."""
    if path.is_dir():
        return any((path / name).is_file() for name in STATE_FILES) or any(path.glob("*.index"))
    return resolve_prefix(path) is not None


class Checkpoint:
    """One TensorFlow V2 checkpoint: its entries, and tensors read on demand from its data shards."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.index = Path(f"{prefix}.index")
        header, self.entries = read_index(self.index)
        self.shards = int(header.get(1, 1) or 1)
        self.big_endian = header.get(2, 0) == 1

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.shards:05d}")

    def tensor(self, name: str, verify: bool = True) -> np.ndarray:
        """The named tensor as numpy, its size and (``verify``) its CRC-32C checked."""
        entry = self.entries[name]
        if entry.sliced:
            raise InteropError(f"{self.index}: {name} is a partitioned variable, which harken cannot read")
        if entry.dtype not in DTYPES:
            raise InteropError(f"{self.index}: {name} has TensorFlow dtype {entry.dtype}, not a number type")
        dtype = np.dtype(DTYPES[entry.dtype])
        dtype = dtype.newbyteorder(">") if self.big_endian else dtype
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.size != count * dtype.itemsize:
            raise InteropError(
                f"{self.index} is damaged: {name} has {entry.size} bytes for shape {list(entry.shape)}"
            )
        path = self.shard_path(entry.shard)
        try:
            with path.open("rb") as handle:
                handle.seek(entry.offset)
                raw = handle.read(entry.size)
        except OSError as error:
            raise InteropError(f"{path}: cannot read the checkpoint's data ({error.strerror})") from None
        if len(raw) != entry.size:
            raise InteropError(
                f"{path} is truncated: {name} needs bytes {entry.offset}-{entry.offset + entry.size}, "
                f"the file has {path.stat().st_size}"
            )
        if verify and entry.crc is not None and crc32c(raw) != unmask(entry.crc):
            raise InteropError(f"{path} is damaged: checksum mismatch in {name}")
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("=")).reshape(entry.shape)


# -- DeepSpeech's variables -------------------------------------------------------------------------

DENSE = ("layer_1", "layer_2", "layer_3", "layer_5", "layer_6")
LSTM_CELLS = (  # the LSTM's variable scope, and the forget bias DeepSpeech's graph added at run time
    ("cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell", 0.0),  # DeepSpeech 0.6-0.9, Coqui
    ("lstm_fused_cell", 1.0),  # DeepSpeech 0.5: LSTMBlockFusedCell with its default forget bias
    ("rnn/lstm_cell", 1.0),  # tf.nn.rnn_cell.LSTMCell with its default forget bias
)
FEATURE_FLAGS = ("audio_sample_rate", "feature_win_len", "feature_win_step")  # flags.txt settings read


def _deepspeech_cell(checkpoint: Checkpoint) -> tuple[str, float]:
    """The LSTM's scope and forget bias; InteropError naming what is missing when not DeepSpeech's."""
    names = checkpoint.entries
    missing = [f"{layer}/{part}" for layer in DENSE for part in ("weights", "bias")]
    missing = [name for name in missing if name not in names]
    cell = next(((s, bias) for s, bias in LSTM_CELLS if {f"{s}/kernel", f"{s}/bias"} <= names.keys()), None)
    if cell is None:
        missing.append(f"{LSTM_CELLS[0][0]}/kernel and /bias")
    if missing:
        held = sorted(name for name in names if "/Adam" not in name)
        shown = ", ".join(held[:6]) + (f" and {len(held) - 6} more" if len(held) > 6 else "")
        raise InteropError(
            f"{checkpoint.index}: not a DeepSpeech checkpoint (missing {', '.join(missing)}; "
            f"it holds {shown or 'no tensors'})"
        )
    norms = sorted(name for name in names if "/LayerNorm/" in name and "/Adam" not in name)
    if norms:
        raise InteropError(
            f"{checkpoint.index}: trained with --layer_norm ({norms[0]}); harken's model has no layer norm"
        )
    assert cell is not None
    return cell


def _geometry(checkpoint: Checkpoint, scope: str) -> tuple[int, int, int]:
    """(n_input, n_hidden, n_classes) from the shapes, every tensor's shape checked against them."""
    shapes = {name: entry.shape for name, entry in checkpoint.entries.items()}
    first, last = shapes["layer_1/weights"], shapes["layer_6/weights"]
    if len(first) != 2 or len(last) != 2:
        raise InteropError(f"{checkpoint.index}: layer_1/weights and layer_6/weights must be matrices")
    (n_input, hidden), n_classes = first, last[1]
    expected: dict[str, tuple[int, ...]] = {f"{layer}/bias": (hidden,) for layer in DENSE[:4]}
    expected |= {"layer_2/weights": (hidden, hidden), "layer_3/weights": (hidden, hidden)}
    expected |= {"layer_5/weights": (hidden, hidden), "layer_6/weights": (hidden, n_classes)}
    expected |= {"layer_6/bias": (n_classes,), f"{scope}/kernel": (2 * hidden, 4 * hidden)}
    expected |= {f"{scope}/bias": (4 * hidden,)}
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise InteropError(
                f"{checkpoint.index}: {name} has shape {list(shapes[name])}, expected {list(shape)} "
                f"(n_hidden {hidden} from layer_1/weights)"
            )
    return n_input, hidden, n_classes


def _training_flags(directory: Path) -> dict[str, float]:
    """Feature settings DeepSpeech wrote to ``flags.txt`` beside its checkpoints (--name=value lines)."""
    path = directory / "flags.txt"
    if not path.is_file():
        return {}
    found: dict[str, float] = {}
    for line in path.read_text("utf-8", errors="replace").splitlines():
        match = re.match(r"^--(\w+)=(.*)$", line.strip())
        if match and match.group(1) in (*FEATURE_FLAGS, "relu_clip"):
            try:
                found[match.group(1)] = float(match.group(2))
            except ValueError:
                raise InteropError(f"{path}: {line.strip()} is not a number") from None
    return found


def _features(n_input: int, flags: dict[str, float], path: Path) -> FeatureConfig:
    n_mfcc = FeatureConfig().n_mfcc  # DeepSpeech's 26
    frames, rest = divmod(n_input, n_mfcc)
    if rest or frames % 2 == 0:
        raise InteropError(
            f"{path}: layer_1 takes {n_input} inputs; "
            f"DeepSpeech's are {n_mfcc} MFCC x (2 n_context + 1) frames"
        )
    settings = {name: int(flags[name]) for name in FEATURE_FLAGS if name in flags}
    try:
        return FeatureConfig(n_mfcc=n_mfcc, n_context=(frames - 1) // 2, feature_norm="none", **settings)
    except ValueError as error:
        raise InteropError(f"{path.parent / 'flags.txt'}: {error}") from None


def _alphabet(given: Path | None, directory: Path) -> tuple[Alphabet, str]:
    """The alphabet (given, or ``alphabet.txt`` beside the checkpoint, or English) and how to name it."""
    if given is None and (directory / "alphabet.txt").is_file():
        given = directory / "alphabet.txt"
    try:
        alphabet = Alphabet.load(given)
    except AlphabetError as error:
        raise InteropError(str(error)) from None
    return alphabet, str(given) if given else "the default English alphabet"


def _state_dict(checkpoint: Checkpoint, scope: str, forget_bias: float) -> dict[str, torch.Tensor]:
    """harken's parameters: dense weights transposed, the LSTM's gates reordered, its forget bias folded."""

    def array(name: str) -> np.ndarray:
        values = checkpoint.tensor(name)
        if values.dtype.kind != "f":
            raise InteropError(f"{checkpoint.index}: {name} holds {values.dtype}, not floating-point weights")
        return values.astype(np.float32)

    def t(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))

    weights = {}
    for layer in DENSE:
        target = "layer_6" if layer == "layer_6" else f"{layer}.linear"
        weights[f"{target}.weight"] = t(array(f"{layer}/weights").T)  # TF [in, out] -> torch [out, in]
        weights[f"{target}.bias"] = t(array(f"{layer}/bias"))
    kernel = gates_tf_to_torch(array(f"{scope}/kernel").T)  # [4H, n_in + H] over concat(input, h)
    bias = array(f"{scope}/bias")
    hidden = bias.shape[0] // 4
    bias[2 * hidden : 3 * hidden] += forget_bias  # f in TF's i, j, f, o
    weights["lstm.weight_ih_l0"] = t(kernel[:, :hidden])
    weights["lstm.weight_hh_l0"] = t(kernel[:, hidden:])
    weights["lstm.bias_ih_l0"] = t(gates_tf_to_torch(bias))
    weights["lstm.bias_hh_l0"] = torch.zeros(4 * hidden)
    return weights


def read_checkpoint(path: str | Path, alphabet_path: str | Path | None = None) -> ImportedModel:
    """A DeepSpeech TensorFlow checkpoint (directory, prefix, or its .index) as harken weights and dims."""
    path = Path(path)
    if not path.exists() and not Path(f"{path}.index").exists():
        raise InteropError(f"{path}: no such file or directory")
    prefix = resolve_prefix(path)
    if prefix is None:
        raise InteropError(
            f"{path}: not a TensorFlow checkpoint (expected a directory with a `checkpoint` file or .index "
            "files, a prefix such as release/best_dev-1466475, or its .index file)"
        )
    checkpoint = Checkpoint(prefix)
    scope, forget_bias = _deepspeech_cell(checkpoint)
    n_input, hidden, n_classes = _geometry(checkpoint, scope)
    flags = _training_flags(prefix.parent)
    features = _features(n_input, flags, checkpoint.index)
    alphabet, described = _alphabet(Path(alphabet_path) if alphabet_path else None, prefix.parent)
    if n_classes != alphabet.n_classes:
        raise InteropError(
            f"{checkpoint.index}: the output layer has {n_classes} classes, {described} has {len(alphabet)} "
            f"symbols + blank = {alphabet.n_classes}; pass the model's alphabet with --alphabet_config_path"
        )
    model = ModelConfig(n_hidden=hidden, relu_clip=float(flags.get("relu_clip", ModelConfig().relu_clip)))
    metadata = {"prefix": str(prefix), "lstm": scope, "forget_bias": forget_bias, "alphabet": described}
    state_dict = _state_dict(checkpoint, scope, forget_bias)
    return ImportedModel(ModelDims.of(features, model, alphabet), state_dict, metadata)
