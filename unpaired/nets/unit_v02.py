"""UNIT's NIPS-2017 image networks (mingyuliutw/UNIT version_02): COCOResGen2 / COCOResGen
and COCOSharedDis, each ONE module holding both domains and the layers they share.

Flax names spell the reference's state_dict keys through `unpaired.torch_io`'s rule:
`encode_A/3/model_0/kernel` is `encode_A.3.model.0.weight`, `dec_shared/0/model_3/bias` is
`dec_shared.0.model.3.bias`, `model_S/4/kernel` is `model_S.4.weight`. The shared residual
blocks (`enc_shared`, `dec_shared`) and the shared D layers (`model_S`) exist once.
Zero padding, LeakyReLU slope 0.01 (PyTorch's default), affine-free InstanceNorm.
Facts: `shared/reference/unit.md` §3.1.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unpaired import layers

Array = jax.Array
GEN_NAMES = ("COCOResGen2", "COCOResGen")
DIS_NAMES = ("COCOSharedDis",)
SLOPE = 0.01  # nn.LeakyReLU() default


class _ConvBlock(nn.Module):
    """LeakyReLUConv2d (conv, lrelu 0.01) or ReLUINSConv2d (conv, IN, relu); conv is `model.0`.

    `transpose` makes it the ConvTranspose2d(k, s, p, output_padding=1) variant.
    """

    features: int
    kernel_size: int
    stride: int
    padding: int
    kind: str = "lrelu"  # lrelu | relu_in
    transpose: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.transpose:
            x = layers.ConvTranspose2d(self.features, self.kernel_size, self.stride, self.padding,
                                       output_padding=1, dtype=self.dtype, name="model_0")(x)
        else:
            x = layers.Conv2d(self.features, self.kernel_size, self.stride, self.padding,
                              dtype=self.dtype, name="model_0")(x)
        if self.kind == "relu_in":
            return nn.relu(layers.instance_norm(x))
        return layers.leaky_relu(x, SLOPE)


class INSResBlock(nn.Module):
    """x + [conv3x3 -> IN -> relu -> conv3x3 -> IN](x); the convs are `model.0` and `model.3`."""

    dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = layers.Conv2d(self.dim, 3, 1, 1, dtype=self.dtype, name="model_0")(x)
        h = nn.relu(layers.instance_norm(h))
        h = layers.Conv2d(self.dim, 3, 1, 1, dtype=self.dtype, name="model_3")(h)
        return x + layers.instance_norm(h)


class ResStack(nn.Module):
    """`n` INSResBlocks named '0'..'n-1' (the reference's enc_shared / dec_shared Sequentials)."""

    n: int
    dim: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i in range(self.n):
            x = INSResBlock(self.dim, self.dtype, name=str(i))(x)
        return x


class Encoder(nn.Module):
    """`encode_A`: c7s1-ch lrelu conv, n_front-1 k3 s2 convs (doubling), n_res INSResBlocks."""

    ch: int
    n_front: int
    n_res: int
    kind: str = "lrelu"  # the stride-2 convs: lrelu (COCOResGen2) | relu_in (COCOResGen)
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = _ConvBlock(self.ch, 7, 1, 3, "lrelu", dtype=self.dtype, name="0")(x)
        ch = self.ch
        for i in range(1, self.n_front):
            ch *= 2
            x = _ConvBlock(ch, 3, 2, 1, self.kind, dtype=self.dtype, name=str(i))(x)
        for i in range(self.n_res):
            x = INSResBlock(ch, self.dtype, name=str(self.n_front + i))(x)
        return x


class Decoder(nn.Module):
    """`decode_A`: n_res INSResBlocks, n_front-1 k3 s2 transposed convs (halving),
    a 1x1 ConvTranspose2d to the image channels, tanh."""

    dim: int
    n_res: int
    n_front: int
    output_nc: int
    kind: str = "lrelu"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i in range(self.n_res):
            x = INSResBlock(self.dim, self.dtype, name=str(i))(x)
        ch, index = self.dim, self.n_res
        for _ in range(self.n_front - 1):
            ch //= 2
            x = _ConvBlock(ch, 3, 2, 1, self.kind, transpose=True, dtype=self.dtype,
                           name=str(index))(x)
            index += 1
        x = layers.ConvTranspose2d(self.output_nc, 1, 1, 0, 0, dtype=self.dtype,
                                   name=str(index))(x)
        return jnp.tanh(layers.at_least_f32(x))


class CoResGen(nn.Module):
    """COCOResGen2 (`name='COCOResGen2'`: every non-residual layer lrelu, no norm) or COCOResGen
    (stride-2 convs ReLU + IN). `encode` stops before the GaussianNoiseLayer (the caller adds
    the noise in training); `decode_shared` then `decode` undo it."""

    input_dim_a: int = 3
    input_dim_b: int = 3
    ch: int = 64
    n_enc_front_blk: int = 3
    n_enc_res_blk: int = 3
    n_enc_shared_blk: int = 1
    n_gen_shared_blk: int = 1
    n_gen_res_blk: int = 3
    n_gen_front_blk: int = 3
    gen_name: str = "COCOResGen2"
    dtype: Any = None

    def setup(self) -> None:
        if self.gen_name not in GEN_NAMES:
            raise ValueError(f"unknown version_02 generator {self.gen_name!r}; expected {GEN_NAMES}")
        kind = "lrelu" if self.gen_name == "COCOResGen2" else "relu_in"
        dim = self.ch * 2 ** (self.n_enc_front_blk - 1)
        enc = lambda: Encoder(self.ch, self.n_enc_front_blk, self.n_enc_res_blk, kind, self.dtype)
        dec = lambda nc: Decoder(dim, self.n_gen_res_blk, self.n_gen_front_blk, nc, kind, self.dtype)
        self.encode_A, self.encode_B = enc(), enc()
        self.enc_shared = ResStack(self.n_enc_shared_blk, dim, self.dtype)
        self.dec_shared = ResStack(self.n_gen_shared_blk, dim, self.dtype)
        self.decode_A, self.decode_B = dec(self.input_dim_a), dec(self.input_dim_b)

    def encode(self, x: Array, domain: str) -> Array:
        """The shared code before the noise: enc_shared(encode_<domain>(x))."""
        front = self.encode_A if domain == "A" else self.encode_B
        return self.enc_shared(front(x))

    def decode_shared(self, z: Array) -> Array:
        """dec_shared(z): the shared first layers of both generators."""
        return self.dec_shared(z)

    def decode(self, y: Array, domain: str) -> Array:
        """decode_<domain> on the output of `decode_shared`."""
        return (self.decode_A if domain == "A" else self.decode_B)(y)

    def __call__(self, x_a: Array, x_b: Array) -> tuple[Array, Array]:
        """(a -> a, b -> b) without noise; touches every layer (used to initialise)."""
        y_a = self.decode_shared(self.encode(x_a, "A"))
        y_b = self.decode_shared(self.encode(x_b, "B"))
        return self.decode(y_a, "A"), self.decode(y_b, "B")


class _DisStack(nn.Module):
    """Layers [start, start + n) of a COCOSharedDis Sequential: k3 s2 lrelu convs (the first
    front layer k7 s2 p3), each doubling, then the 1x1 conv to one channel if `classify`."""

    ch: int
    n: int
    first: bool
    classify: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        ch = self.ch
        for i in range(self.n):
            if self.first and i == 0:
                x = _ConvBlock(ch, 7, 2, 3, "lrelu", dtype=self.dtype, name="0")(x)
            else:
                ch *= 2
                x = _ConvBlock(ch, 3, 2, 1, "lrelu", dtype=self.dtype, name=str(i))(x)
        if self.classify:
            x = layers.Conv2d(1, 1, dtype=self.dtype, name=str(self.n))(x)
        return layers.at_least_f32(x) if self.classify else x


class CoSharedDis(nn.Module):
    """COCOSharedDis: per-domain fronts `model_A`/`model_B` (n_front_layer convs) and the
    shared `model_S` (n_shared_layer convs + the 1x1 conv); raw logit maps."""

    ch: int = 64
    n_front_layer: int = 2
    n_shared_layer: int = 4
    dtype: Any = None

    def setup(self) -> None:
        front = lambda: _DisStack(self.ch, self.n_front_layer, True, self.n_shared_layer == 0,
                                  self.dtype)
        self.model_A, self.model_B = front(), front()
        tch = self.ch * 2 ** (self.n_front_layer - 1)
        self.model_S = _DisStack(tch, self.n_shared_layer, False, self.n_shared_layer > 0,
                                 self.dtype)

    def discriminate(self, x: Array, domain: str) -> Array:
        """model_S(model_<domain>(x)): one NHWC logit map per image."""
        return self.model_S((self.model_A if domain == "A" else self.model_B)(x))

    def __call__(self, x_a: Array, x_b: Array) -> tuple[Array, Array]:
        return self.discriminate(x_a, "A"), self.discriminate(x_b, "B")


def torch_default_biases(params: Any, key: Array) -> Any:
    """Biases drawn as PyTorch's Conv/ConvTranspose default, U(+-1/sqrt(fan_in)), where the
    reference leaves them (version_02 re-initialises only the weights, N(0, 0.02)).

    For our (k, k, A, B) kernels PyTorch's fan_in is k * k * A for both conv kinds.
    """
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    keys = iter(jax.random.split(key, max(len(flat), 1)))

    def visit(node):
        if isinstance(node, dict) and "kernel" in node and "bias" in node:
            k = node["kernel"].shape
            bound = 1.0 / (k[0] * k[1] * k[2]) ** 0.5
            bias = jax.random.uniform(next(keys), node["bias"].shape, node["bias"].dtype,
                                      -bound, bound)
            return {**node, "bias": bias}
        if isinstance(node, dict):
            return {name: visit(child) for name, child in node.items()}
        return node

    return visit(params)


def dis_output_side(size: int, n_layer: int) -> int:
    """Side of the COCOSharedDis logit map for a `size` input (k7/k3, stride 2, 'same' pads)."""
    for _ in range(n_layer):
        size = (size - 1) // 2 + 1
    return size
