"""Pure tensor surgery: input-channel adaptation and 2D → 3D inflation.

>>> import torch
>>> w = torch.randn(8, 3, 3, 3)
>>> adapt_input_conv(w, 1).shape, adapt_input_conv(w, 5).shape, inflate_weight(w, 3).shape
(torch.Size([8, 1, 3, 3]), torch.Size([8, 5, 3, 3]), torch.Size([8, 3, 3, 3, 3]))
"""

from __future__ import annotations

from typing import Any

from ..errors import WeightsError

__all__ = ["adapt_input_conv", "inflate_weight", "adapt_state_dict"]

Tensor = Any


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt a first-convolution kernel (out, C, *k) to ``in_channels`` inputs.

    - C → 1: sum over C, so the model on ``x`` equals the C-channel model on ``[x] * C``.
    - 1 → N: repeat and divide by N (same response to an N-fold copy of the input).
    - C → N otherwise: tile the C kernels cyclically and scale by C / N, keeping the expected
      activation when all channels carry similar signal.
    """
    c = weight.shape[1]
    if in_channels == c:
        return weight
    if in_channels < 1:
        raise WeightsError(None, f"cannot adapt a first convolution to {in_channels} input channels")
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // c)  # ceil
    tiled = weight.repeat(1, repeats, *([1] * (weight.dim() - 2)))[:, :in_channels]
    return tiled * (c / in_channels)


def inflate_weight(weight: Tensor, depth: int) -> Tensor:
    """I3D inflation of a 2D kernel (out, in, h, w) → (out, in, depth, h, w), divided by depth.

    A volume of identical slices then gives, away from the depth borders, the 2D response.
    """
    if weight.dim() != 4:
        raise WeightsError(None, f"only 2D convolution kernels inflate; got shape {tuple(weight.shape)}")
    return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


def adapt_state_dict(state: dict, reference: dict, first_conv: str) -> dict:
    """Fit a converted state dict to ``reference`` (the target network's own state dict).

    Adapts ``first_conv``'s input channels, inflates every 2D kernel whose target is 3D, and
    leaves everything else untouched; any other mismatch is a :class:`WeightsError`.
    """
    out = {}
    for key, value in state.items():
        target = reference.get(key)
        if target is None:
            out[key] = value
            continue
        if key == first_conv:
            value = adapt_input_conv(value, target.shape[1])
        if value.dim() == 4 and target.dim() == 5:
            value = inflate_weight(value, target.shape[2])
        if tuple(value.shape) != tuple(target.shape):
            raise WeightsError(None, f"{key}: cannot fit {tuple(value.shape)} to the model's {tuple(target.shape)}")
        out[key] = value
    return out
