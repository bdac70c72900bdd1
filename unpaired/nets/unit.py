"""UNIT networks (mingyuliutw/UNIT master): VAEGen (ContentEncoder + Decoder) and MsImageDis.

Flax modules whose names spell the reference's state_dict keys through `unpaired.torch_io`'s
rule (`enc/model_3/model_0/model_1/conv/kernel` is `enc.model.3.model.0.model.1.conv.weight`,
`cnns_0/4/kernel` is `cnns.0.4.weight`). Facts: `shared/reference/unit.md` §1, §4.
Generator convs use kaiming-normal init, discriminator convs N(0, 0.02), biases 0.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unpaired import layers

Array = jax.Array

PAD_TYPES = ("reflect", "replicate", "zero")
ACTIVATIONS = ("relu", "lrelu", "tanh", "none")


def _activate(x: Array, activation: str) -> Array:
    if activation == "relu":
        return nn.relu(x)
    if activation == "lrelu":
        return layers.leaky_relu(x, 0.2)
    if activation == "tanh":
        return jnp.tanh(layers.at_least_f32(x)).astype(x.dtype)
    if activation == "none":
        return x
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


class Conv2dBlock(nn.Module):
    """pad -> conv (bias) -> norm ('in' | 'ln' | 'none') -> activation; params under `conv`, `norm`."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    norm: str = "none"
    activation: str = "relu"
    pad_type: str = "zero"
    init_type: str = "kaiming"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = layers.Conv2d(self.features, self.kernel_size, self.stride, self.padding,
                          padding_mode=self.pad_type, init_type=self.init_type,
                          dtype=self.dtype, name="conv")(x)
        if self.norm == "in":
            x = layers.instance_norm(x)
        elif self.norm == "ln":
            x = layers.SampleLayerNorm(name="norm")(x)
        elif self.norm != "none":
            raise ValueError(f"unknown UNIT norm {self.norm!r}; expected in, ln or none")
        return _activate(x, self.activation)


class VAEGen(nn.Module):
    """The reference's VAEGen: `encode(x) -> h` (ContentEncoder, IN) and `decode(z)` (Decoder)."""

    output_nc: int = 3
    dim: int = 64
    n_downsample: int = 2
    n_res: int = 4
    activation: str = "relu"
    pad_type: str = "reflect"
    dtype: Any = None

    def setup(self) -> None:
        self.enc = ContentEncoder(self.dim, self.n_downsample, self.n_res, self.activation,
                                  self.pad_type, self.dtype)
        self.dec = Decoder(self.output_nc, self.dim * 2**self.n_downsample, self.n_downsample,
                           self.n_res, self.activation, self.pad_type, self.dtype)

    def encode(self, x: Array) -> Array:
        """The latent mean h (the reference's noise is added by the caller)."""
        return self.enc(x)

    def decode(self, z: Array) -> Array:
        return self.dec(z)

    def __call__(self, x: Array) -> Array:
        """Deterministic reconstruction dec(enc(x)); used to initialise both halves."""
        return self.decode(self.encode(x))


class ContentEncoder(nn.Module):
    """`enc.model`: c7s1-dim, n_downsample k4 s2 convs (IN, relu), n_res ResBlocks."""

    dim: int = 64
    n_downsample: int = 2
    n_res: int = 4
    activation: str = "relu"
    pad_type: str = "reflect"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(pad_type=self.pad_type, dtype=self.dtype)
        x = Conv2dBlock(self.dim, 7, 1, 3, "in", self.activation, name="model_0", **kw)(x)
        dim = self.dim
        for i in range(self.n_downsample):
            x = Conv2dBlock(dim * 2, 4, 2, 1, "in", self.activation, name=f"model_{i + 1}", **kw)(x)
            dim *= 2
        return ResidualStack(self.n_res, dim, "in", self.activation, self.pad_type, self.dtype,
                             name=f"model_{self.n_downsample + 1}")(x)


class Decoder(nn.Module):
    """`dec.model`: ResBlocks (IN), then per level nearest x2 + c5 (LN, relu), then c7 tanh."""

    output_nc: int = 3
    dim: int = 256
    n_upsample: int = 2
    n_res: int = 4
    activation: str = "relu"
    pad_type: str = "reflect"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(pad_type=self.pad_type, dtype=self.dtype)
        x = ResidualStack(self.n_res, self.dim, "in", self.activation, self.pad_type, self.dtype,
                          name="model_0")(x)
        dim, index = self.dim, 1
        for _ in range(self.n_upsample):
            x = layers.upsample_nearest(x, 2)  # model.index: nn.Upsample, no parameters
            x = Conv2dBlock(dim // 2, 5, 1, 2, "ln", self.activation, name=f"model_{index + 1}",
                            **kw)(x)
            dim //= 2
            index += 2
        x = Conv2dBlock(self.output_nc, 7, 1, 3, "none", "tanh", name=f"model_{index}", **kw)(x)
        return layers.at_least_f32(x)


class ResidualStack(nn.Module):
    """`ResBlocks(n, dim)`: `.model.r` is ResBlock r, whose `.model.{0,1}` are Conv2dBlocks."""

    n: int
    dim: int
    norm: str = "in"
    activation: str = "relu"
    pad_type: str = "reflect"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for r in range(self.n):
            x = ResBlock(self.dim, self.norm, self.activation, self.pad_type, self.dtype,
                         name=f"model_{r}")(x)
        return x


class ResBlock(nn.Module):
    """x + model.1(model.0(x)); no activation after the add."""

    dim: int
    norm: str = "in"
    activation: str = "relu"
    pad_type: str = "reflect"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(pad_type=self.pad_type, dtype=self.dtype)
        h = Conv2dBlock(self.dim, 3, 1, 1, self.norm, self.activation, name="model_0", **kw)(x)
        h = Conv2dBlock(self.dim, 3, 1, 1, self.norm, "none", name="model_1", **kw)(h)
        return x + h


class MsImageDis(nn.Module):
    """Multi-scale discriminator: `cnns.s` per scale (k4 s2 lrelu convs, then a 1x1 conv),
    avg-pool (3, s2, p1, count_include_pad=False) between scales; returns the raw maps.

    `part` splits it for the shared-weight form: 'front' runs the first n_layer - n_shared
    conv blocks of every scale (one per domain), 'back' the remaining blocks and the 1x1
    conv on those features (one module shared by both domains); 'all' is the reference's.
    """

    dim: int = 64
    n_layer: int = 4
    num_scales: int = 3
    norm: str = "none"
    activation: str = "lrelu"
    pad_type: str = "reflect"
    dtype: Any = None
    part: str = "all"
    n_shared: int = 0

    @nn.compact
    def __call__(self, x: Any) -> tuple[Array, ...]:
        if self.part not in ("all", "front", "back"):
            raise ValueError(f"unknown MsImageDis part {self.part!r}")
        split = self.n_layer - self.n_shared if self.part != "all" else self.n_layer + 1
        start, stop = {"all": (0, self.n_layer + 1), "front": (0, split),
                       "back": (split, self.n_layer + 1)}[self.part]
        outs = []
        for s in range(self.num_scales):
            inp = x[s] if self.part == "back" else x
            outs.append(_ScaleStack(self.dim, self.n_layer, self.norm, self.activation,
                                    self.pad_type, self.dtype, start, stop, name=f"cnns_{s}")(inp))
            if self.part != "back":
                x = layers.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        return tuple(outs)


class _ScaleStack(nn.Module):
    """One scale's `nn.Sequential` (children named '0' .. str(n_layer)), or the slice
    [start, stop) of it."""

    dim: int
    n_layer: int
    norm: str
    activation: str
    pad_type: str
    dtype: Any = None
    start: int = 0
    stop: int = -1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kw = dict(pad_type=self.pad_type, init_type="normal", dtype=self.dtype)
        stop = self.n_layer + 1 if self.stop < 0 else self.stop
        for i in range(self.start, min(stop, self.n_layer)):
            norm = "none" if i == 0 else self.norm
            x = Conv2dBlock(self.dim * 2**i, 4, 2, 1, norm, self.activation, name=str(i), **kw)(x)
        if stop > self.n_layer:
            x = layers.Conv2d(1, 1, init_type="normal", dtype=self.dtype, name=str(self.n_layer))(x)
            x = layers.at_least_f32(x)
        return x


class SharedLatent(nn.Module):
    """The shared-weight form's shared layers: the last residual blocks of both encoders
    (`encode`) and the first residual blocks of both decoders (`decode`), stored once."""

    n: int
    dim: int
    activation: str = "relu"
    pad_type: str = "reflect"
    dtype: Any = None

    def setup(self) -> None:
        self.enc = ResidualStack(self.n, self.dim, "in", self.activation, self.pad_type, self.dtype)
        self.dec = ResidualStack(self.n, self.dim, "in", self.activation, self.pad_type, self.dtype)

    def encode(self, x: Array) -> Array:
        return self.enc(x)

    def decode(self, z: Array) -> Array:
        return self.dec(z)

    def __call__(self, x: Array) -> Array:
        return self.decode(self.encode(x))


def discriminator_sizes(size: int, n_layer: int, num_scales: int) -> list[int]:
    """Side of each scale's output map for a `size` input (0: the input is too small)."""
    out = []
    for _ in range(num_scales):
        side = size
        for _ in range(n_layer):
            side = (side + 2 - 4) // 2 + 1 if side >= 2 else 0
        out.append(max(side, 0))
        size = (size + 2 - 3) // 2 + 1
    return out
