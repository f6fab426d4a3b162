"""Mixed precision for the training loop (--automatic_mixed_precision): autocast and gradient scaling.

On CUDA the forward pass runs under autocast in bfloat16 where the GPU has it (no scaling needed: same
exponent range as float32), else in float16 with a GradScaler. On a CPU with native bfloat16 arithmetic
(AVX512-BF16 or AMX) it runs under CPU bfloat16 autocast (1.3-1.4x faster training at n_hidden 256 on the
2-core test machine, docs/benchmarks.md); other CPUs train in float32. The model returns float32
log-probabilities and the CTC loss is always computed in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class Precision:
    """How the forward pass computes: float32, or autocast to ``dtype`` (with a gradient scaler for
    float16). The CTC loss is always computed in float32."""

    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    device_type: str = "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, model: nn.Module, factor: float, clip: float) -> None:
        """Multiply the gradients by ``factor`` (unscaled first), clip their norm, update."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if factor != 1.0:
            for parameter in model.parameters():
                if parameter.grad is not None:
                    parameter.grad.mul_(factor)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX tiles); elsewhere bfloat16
    autocast is emulated and slower than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def choose_precision(enabled: bool, device: torch.device, log: Callable[[str], None]) -> Precision:
    """--automatic_mixed_precision: bfloat16 where the GPU (or CPU) has it natively, float16 with a
    GradScaler on older GPUs, float32 (with one note) on other CPUs and devices."""
    if not enabled:
        return Precision()
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        log("Mixed precision: bfloat16 autocast (CTC loss in float32)")
        return Precision(torch.bfloat16)
    if device.type == "cuda":
        log("Mixed precision: float16 autocast with a gradient scaler (CTC loss in float32)")
        return Precision(torch.float16, torch.amp.GradScaler("cuda"))
    if device.type == "cpu" and cpu_has_bfloat16():
        log("Mixed precision: bfloat16 autocast on the CPU (it has native bfloat16; CTC loss in float32)")
        return Precision(torch.bfloat16, device_type="cpu")
    log(
        f"note: --automatic_mixed_precision needs a CUDA GPU or a CPU with native bfloat16 "
        f"(AVX512-BF16, AMX); training on {device.type} in float32"
    )
    return Precision()
