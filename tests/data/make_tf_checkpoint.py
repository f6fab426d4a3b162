"""Writes tests/data/tf_checkpoint/: small DeepSpeech checkpoints saved by TensorFlow itself.

TensorFlow is not a harken dependency, not even for tests (its CPU wheel is 274 MB, 1.6 GB installed), so
the checkpoints are generated once and committed (about 90 KB). To regenerate, in an environment with
TensorFlow (written with tensorflow-cpu 2.21.0, Python 3.11):

    python tests/data/make_tf_checkpoint.py

Each checkpoint holds DeepSpeech's variables under their exact names and shapes (n_hidden 8, the English
alphabet's 29 classes), created with ``tf.compat.v1.get_variable`` inside DeepSpeech's variable scopes and
saved with ``tf.compat.v1.train.Saver`` (V2 format), as DeepSpeech's train.py did:

- ``deepspeech-0.9/``: DeepSpeech 0.6-0.9's names (the LSTM under
  ``cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell``, forget bias 0), with the Adam slots,
  ``beta1_power``/``beta2_power``, ``global_step`` and ``learning_rate`` of a training checkpoint, and the
  ``checkpoint`` state file naming ``best_dev-1466475`` by an absolute path of another machine (as
  DeepSpeech's release checkpoint does: the path is rewritten after saving);
- ``deepspeech-0.5/``: DeepSpeech 0.5's ``lstm_fused_cell`` (run with TensorFlow's forget bias 1.0), no
  state file;
- ``not-deepspeech/``: a dense layer of another model.

For the first two, TensorFlow's own graph of DeepSpeech's network on ``inputs()`` (matmul + bias, ReLU
clipped at 20, ``BlockLSTM`` — the op behind DeepSpeech's LSTMBlockFusedCell — time-major, then the
log-softmax) is saved as ``expected.npy``: the tests compare harken with TensorFlow's kernels as well as
with a numpy re-implementation. The weights and inputs come from ``variables()`` and ``inputs()``, which
the tests call too, so they can check every tensor independently of harken's reader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

N_HIDDEN = 8
N_CLASSES = 29  # English: 28 symbols + blank
N_INPUT = 494  # 26 MFCC x 19 frames
FRAMES = 12
STEP = 1466475  # the step of DeepSpeech 0.9.3's release checkpoint, for realism
LSTM_09 = "cudnn_lstm/rnn/multi_rnn_cell/cell_0/cudnn_compatible_lstm_cell"
LSTM_05 = "lstm_fused_cell"
HERE = Path(__file__).parent / "tf_checkpoint"


def variables(lstm_scope: str, seed: int) -> dict[str, np.ndarray]:
    """DeepSpeech's trainable variables by their TensorFlow names: nonzero biases, weights large enough
    that the ReLU clip at 20 is reached."""
    rng = np.random.default_rng(seed)
    sizes = {"layer_1": (N_INPUT, N_HIDDEN), "layer_2": (N_HIDDEN, N_HIDDEN), "layer_3": (N_HIDDEN, N_HIDDEN)}
    sizes |= {"layer_5": (N_HIDDEN, N_HIDDEN), "layer_6": (N_HIDDEN, N_CLASSES)}
    found = {}
    for layer, (n_in, n_out) in sizes.items():
        limit = 1.5 * np.sqrt(6 / (n_in + n_out))
        found[f"{layer}/weights"] = rng.uniform(-limit, limit, (n_in, n_out)).astype(np.float32)
        found[f"{layer}/bias"] = rng.normal(0, 0.5, n_out).astype(np.float32)
    found[f"{lstm_scope}/kernel"] = rng.uniform(-0.6, 0.6, (2 * N_HIDDEN, 4 * N_HIDDEN)).astype(np.float32)
    found[f"{lstm_scope}/bias"] = rng.normal(0, 0.5, 4 * N_HIDDEN).astype(np.float32)
    return found


def inputs(seed: int = 7) -> np.ndarray:
    """[FRAMES, N_INPUT] context windows, scaled like MFCCs."""
    return np.random.default_rng(seed).normal(0, 6, (FRAMES, N_INPUT)).astype(np.float32)


def _deepspeech_graph(tf: Any, weights: dict[str, np.ndarray], lstm_scope: str, forget_bias: float) -> Any:
    """DeepSpeech's create_model with rnn_impl_lstmblockfusedcell, batch 1: (input, log-probs, loss)."""
    v1 = tf.compat.v1
    params = {}
    for name in weights:
        scope, leaf = name.rsplit("/", 1)
        with v1.variable_scope(scope):
            params[name] = v1.get_variable(leaf, initializer=v1.constant(weights[name]))
    x = v1.placeholder(v1.float32, [None, N_INPUT], name="input")

    def dense(layer: str, value: Any, relu: bool = True) -> Any:
        output = v1.nn.bias_add(v1.matmul(value, params[f"{layer}/weights"]), params[f"{layer}/bias"])
        return v1.minimum(v1.nn.relu(output), 20.0) if relu else output

    hidden = dense("layer_3", dense("layer_2", dense("layer_1", x)))
    sequence = v1.reshape(hidden, [-1, 1, N_HIDDEN])  # [time, batch, n_hidden]
    zeros = v1.zeros([1, N_HIDDEN])
    peephole = v1.zeros([N_HIDDEN])
    *_, h = tf.raw_ops.BlockLSTM(
        seq_len_max=v1.cast(v1.shape(sequence)[0], v1.int64), x=sequence, cs_prev=zeros, h_prev=zeros,
        w=params[f"{lstm_scope}/kernel"], wci=peephole, wcf=peephole, wco=peephole,
        b=params[f"{lstm_scope}/bias"], forget_bias=forget_bias, cell_clip=-1.0, use_peephole=False,
    )  # fmt: skip
    logits = dense("layer_6", dense("layer_5", v1.reshape(h, [-1, N_HIDDEN])), relu=False)
    return x, v1.nn.log_softmax(logits), v1.reduce_mean(v1.square(logits))


def _write(directory: Path, name: str, lstm_scope: str, forget_bias: float, seed: int, adam: bool) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    directory.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():
        x, log_probs, loss = _deepspeech_graph(tf, variables(lstm_scope, seed), lstm_scope, forget_bias)
        global_step = v1.train.get_or_create_global_step()
        if adam:  # DeepSpeech 0.9's training graph: a learning-rate variable and Adam (only for its slots)
            learning_rate = v1.get_variable("learning_rate", initializer=0.001, trainable=False)
            v1.train.AdamOptimizer(learning_rate).minimize(loss, global_step=global_step)
        saver = v1.train.Saver()  # V2, DeepSpeech's default
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            session.run(global_step.assign(STEP))
            expected = session.run(log_probs, {x: inputs()})
            saver.save(session, str(directory / name), global_step=STEP, write_meta_graph=False)
    np.save(directory / "expected.npy", expected.astype(np.float32))


def _write_other(directory: Path) -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    directory.mkdir(parents=True, exist_ok=True)
    with tf.Graph().as_default():
        with v1.variable_scope("dense"):
            v1.get_variable("kernel", initializer=v1.ones([4, 3]))
            v1.get_variable("bias", initializer=v1.zeros([3]))
        v1.train.get_or_create_global_step()
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            v1.train.Saver().save(
                session, str(directory / "model.ckpt"), global_step=1, write_meta_graph=False
            )


def main() -> None:
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    _write(HERE / "deepspeech-0.9", "best_dev", LSTM_09, 0.0, seed=9, adam=True)
    _write(HERE / "deepspeech-0.5", "best_dev", LSTM_05, 1.0, seed=5, adam=False)
    (HERE / "deepspeech-0.5" / "checkpoint").unlink()
    _write_other(HERE / "not-deepspeech")
    for state in HERE.glob("*/checkpoint"):  # absolute paths, as DeepSpeech's were: of the training machine
        state.write_text(state.read_text().replace(str(HERE), "/home/deepspeech/checkpoints"))
    print(f"Wrote {HERE} with TensorFlow {tf.__version__}")


if __name__ == "__main__":
    main()
