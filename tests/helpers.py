"""Shared test utilities: layout conversion, error measures, torch <-> jax weight copies."""

from __future__ import annotations

import numpy as np
import torch


def nchw(x: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> NCHW torch tensor (dtype kept)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t) -> np.ndarray:
    """NCHW torch tensor -> NHWC numpy."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t).transpose(0, 2, 3, 1)


def rel_err(a, b) -> float:
    """max|a - b| / max(max|b|, tiny): one relative error for a whole tensor."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def x64():
    """A context in which JAX computes in float64 (for gradient parity)."""
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older JAX

    return enable_x64()


def grad_errors(ours: dict, theirs: dict) -> dict:
    """Per-tensor relative gradient errors, floored at 1e-3 of the largest gradient.

    Gradients that are mathematically zero (a conv bias before an affine-free
    InstanceNorm) hold only rounding noise on both sides; the floor keeps them from
    being compared relative to that noise, while every other tensor keeps its own scale.
    """
    assert set(ours) == set(theirs), (sorted(set(ours) ^ set(theirs)))
    scale = max(float(np.max(np.abs(np.asarray(v)))) for v in theirs.values())
    out = {}
    for key, value in theirs.items():
        a, b = np.asarray(ours[key], np.float64), np.asarray(value, np.float64)
        assert a.shape == b.shape, (key, a.shape, b.shape)
        denom = max(float(np.max(np.abs(b))), 1e-3 * scale, 1e-30)
        out[key] = float(np.max(np.abs(a - b)) / denom)
    return out


def biases_before_instance_norm(net: torch.nn.Module) -> set:
    """state_dict keys of conv biases that feed an affine-free InstanceNorm directly.

    The norm's mean subtraction cancels them, so their gradient is mathematically zero
    and only rounding noise (~1e-14) reaches Adam, which scales it up to lr-sized noise
    steps on both sides. They are compared on an absolute scale instead.
    """
    keys = set()
    for prefix, module in net.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (name, child), (_, nxt) in zip(children, children[1:]):
                if isinstance(child, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and \
                        isinstance(nxt, torch.nn.InstanceNorm2d) and child.bias is not None:
                    keys.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return keys
