"""The DeepSpeech acoustic model.

context windows -> 3 dense layers (ReLU clipped at relu_clip) -> LSTM -> dense -> output layer over the
alphabet plus the CTC blank (the last class). With n_hidden 2048 it has the geometry of DeepSpeech 0.9's
released models (about 47 M parameters). Layer names follow DeepSpeech's (layer_1 ... layer_6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from harken.config import FeatureConfig, ModelConfig

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each [directions, batch, n_hidden]


def _dropout(rate: float) -> nn.Module:
    return nn.Dropout(rate) if rate > 0 else nn.Identity()


class ClippedDense(nn.Module):
    """Linear -> ReLU clipped at ``clip`` -> dropout."""

    def __init__(self, n_in: int, n_out: int, clip: float, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.clip = clip
        self.dropout = _dropout(dropout)
        nn.init.xavier_uniform_(self.linear.weight)  # DeepSpeech: VarianceScaling(fan_avg, uniform)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(torch.clamp(F.relu(self.linear(x)), max=self.clip))


class DeepSpeech(nn.Module):
    def __init__(self, features: FeatureConfig, config: ModelConfig, n_classes: int) -> None:
        super().__init__()
        hidden, clip = config.n_hidden, config.relu_clip
        self.n_input = features.n_input
        self.n_hidden = hidden
        self.n_classes = n_classes
        self.bidirectional = config.bidirectional
        self.layer_1 = ClippedDense(features.n_input, hidden, clip, config.dropout(1))
        self.layer_2 = ClippedDense(hidden, hidden, clip, config.dropout(2))
        self.layer_3 = ClippedDense(hidden, hidden, clip, config.dropout(3))
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=config.bidirectional)
        self.lstm_dropout = _dropout(config.dropout(4))  # forward direction
        self.lstm_dropout_backward = _dropout(config.dropout(5)) if config.bidirectional else nn.Identity()
        directions = 2 if config.bidirectional else 1
        # DeepSpeech numbers its dropout rates by position: layer_5 takes the sixth.
        self.layer_5 = ClippedDense(directions * hidden, hidden, clip, config.dropout(6))
        self.layer_6 = nn.Linear(hidden, n_classes)
        nn.init.xavier_uniform_(self.layer_6.weight)
        nn.init.zeros_(self.layer_6.bias)
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight"):
                nn.init.xavier_uniform_(param)
            else:
                nn.init.zeros_(param)  # TF LSTM: zero biases, forget bias 0

    def initial_state(self, batch: int, device: torch.device | None = None) -> State:
        directions = 2 if self.bidirectional else 1
        zeros = torch.zeros(directions, batch, self.n_hidden, device=device)
        return zeros, zeros.clone()

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: State | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Log-probabilities of every class at every frame.

        x: [batch, time, n_input] context windows; lengths: [batch] valid frames (None: all valid);
        state: LSTM (h, c) to continue from (None: zeros).
        Returns log_probs [batch, time, n_classes], lengths [batch], and the LSTM state after each
        sequence's last valid frame.
        """
        batch, time, _ = x.shape
        if lengths is None:
            lengths = torch.full((batch,), time, dtype=torch.int64)
        if state is None:
            state = self.initial_state(batch, x.device)
        hidden = self.layer_3(self.layer_2(self.layer_1(x)))  # [batch, time, n_hidden]
        if bool((lengths == time).all()):
            recurrent, new_state = self.lstm(hidden, state)  # [batch, time, directions * n_hidden]
        else:
            packed = pack_padded_sequence(hidden, lengths.cpu(), batch_first=True, enforce_sorted=False)
            packed_out, new_state = self.lstm(packed, state)
            recurrent, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=time)
        if self.bidirectional:
            forward, backward = recurrent.chunk(2, dim=-1)
            recurrent = torch.cat([self.lstm_dropout(forward), self.lstm_dropout_backward(backward)], dim=-1)
        else:
            recurrent = self.lstm_dropout(recurrent)
        logits = self.layer_6(self.layer_5(recurrent))  # [batch, time, n_classes]
        return F.log_softmax(logits.float(), dim=-1), lengths, new_state


def choose_device(name: str) -> torch.device:
    """``auto`` (a CUDA GPU when there is one), or a torch device name; ValueError when unusable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a torch device (auto, cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA GPU (use --device cpu)")
    return device


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
