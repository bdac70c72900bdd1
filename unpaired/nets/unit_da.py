"""UNIT's digit domain-adaptation networks (mingyuliutw/UNIT version_02 `cocogan_nets_da.py`).

`CoVAE32x32`: both domains' VAEs in one module, the middle layers (and the Gaussian VAE
layer) stored once; `CoDis32x32`: both domains' discriminators with a shared trunk, a
real/fake head and a digit classifier head. Module names spell the reference's
state_dict keys through `unpaired.torch_io` (`g_en_conv0_a/model_1` is
`g_en_conv0_a.model.1`, `conv1/0/kernel` is `conv1.0.weight`). Layout NHWC; the
generator's inputs carry the two xy coordinate channels (`xy_channels`) after the image's.
Facts: `shared/reference/unit.md` §3.2.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unpaired import layers

Array = jax.Array
IMAGE_SIZE = 32  # the k8 encoder conv and the k2 heads fix the size
NUM_CLASSES = 10
DROPOUT_RATES = (0.1, 0.3, 0.5, 0.5)  # CoDis32x32's dropout0..3 on the trunk


def xy_channels(n: int, size: int = IMAGE_SIZE) -> np.ndarray:
    """The reference's `_create_xy_image` in NHWC: channel 0 = (row - size/2)/(size/2), 1 = column."""
    grid = (np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), -1)
            .astype(np.float32) - size / 2) / (size / 2)
    return np.broadcast_to(grid, (n, size, size, 2))


def with_xy(x: Array) -> Array:
    """Images with the xy coordinate channels appended (the generator's input)."""
    return jnp.concatenate([x, jnp.asarray(xy_channels(x.shape[0], x.shape[1]), x.dtype)], axis=-1)


def _normal(stddev: float):
    return nn.initializers.normal(stddev=stddev)


class Bias2d(nn.Module):
    """The reference's `Bias2d`: a learned per-channel bias, N(0, 0.002) at init."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        bias = self.param("bias", _normal(0.002), (x.shape[-1],), jnp.float32)
        return x + bias.astype(x.dtype)


class BNNSBlock(nn.Module):
    """`LeakyReLUBNNSConv2d` / `...ConvTranspose2d`: `model.0` conv (bias) -> `model.1`
    BatchNorm2d(affine=False) -> `model.2` Bias2d -> LeakyReLU(0.01)."""

    features: int
    kernel_size: int
    stride: int
    padding: int
    transpose: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        if self.transpose:
            x = layers.ConvTranspose2d(self.features, self.kernel_size, self.stride, self.padding,
                                       output_padding=0, name="model_0")(x)
        else:
            x = layers.Conv2d(self.features, self.kernel_size, self.stride, self.padding,
                              name="model_0")(x)
        x = layers.BatchNorm(affine=False, name="model_1")(x, train)
        x = Bias2d(name="model_2")(x)
        return layers.leaky_relu(x, 0.01)


class CoVAE32x32(nn.Module):
    """The coupled VAE: per-domain first encoder and last decoder layers, the rest shared.

    `__call__(x_a, x_b, eps)` is the reference's `forward`: both batches (with xy channels)
    through one pass (BatchNorm statistics over both), z = mu + sd * eps, every image decoded
    by both domains' last layers; returns x_aa, x_ba, x_ab, x_bb, mu, sd.
    """

    ch: int = 96
    output_dim_a: int = 1
    output_dim_b: int = 1

    def setup(self) -> None:
        ch = self.ch
        self.g_en_conv0_a = BNNSBlock(ch, 5, 2, 2)
        self.g_en_conv0_b = BNNSBlock(ch, 5, 2, 2)
        self.g_en_conv1 = BNNSBlock(ch * 2, 5, 2, 2)
        self.g_en_conv2 = BNNSBlock(ch * 4, 8, 1, 0)
        self.g_en_conv3 = BNNSBlock(ch * 8, 1, 1, 0)
        self.g_vae = GaussianVAE2D(ch * 8)
        self.g_de_conv0 = BNNSBlock(ch * 8, 4, 2, 0, transpose=True)
        self.g_de_conv1 = BNNSBlock(ch * 4, 4, 2, 1, transpose=True)
        self.g_de_conv2 = BNNSBlock(ch * 2, 4, 2, 1, transpose=True)
        self.g_de_conv3_a = BNNSBlock(ch, 4, 2, 1, transpose=True)
        self.g_de_conv3_b = BNNSBlock(ch, 4, 2, 1, transpose=True)
        self.de_conv4_a = layers.ConvTranspose2d(self.output_dim_a, 1, 1, 0, output_padding=0)
        self.de_conv4_b = layers.ConvTranspose2d(self.output_dim_b, 1, 1, 0, output_padding=0)

    def encode_front(self, x: Array, domain: str, train: bool = True) -> Array:
        """The domain's own first layer (`g_en_conv0_a` or `_b`)."""
        conv = self.g_en_conv0_a if domain == "A" else self.g_en_conv0_b
        return conv(x, train)

    def encode_shared(self, h0: Array, train: bool = True) -> tuple[Array, Array]:
        """(mu, sd) from the shared encoder layers and the Gaussian VAE layer."""
        h = self.g_en_conv3(self.g_en_conv2(self.g_en_conv1(h0, train), train), train)
        return self.g_vae(h)

    def decode_shared(self, z: Array, train: bool = True) -> Array:
        """The shared decoder layers: 1x1 code -> ch*2 x 16 x 16."""
        return self.g_de_conv2(self.g_de_conv1(self.g_de_conv0(z, train), train), train)

    def decode_back(self, h: Array, domain: str, train: bool = True) -> Array:
        """The domain's own last layers and tanh: ch*2 x 16 x 16 -> an image in [-1, 1]."""
        if domain == "A":
            out = self.de_conv4_a(self.g_de_conv3_a(h, train))
        else:
            out = self.de_conv4_b(self.g_de_conv3_b(h, train))
        return jnp.tanh(out)

    def translate(self, x: Array, source: str, target: str, train: bool = False) -> Array:
        """source -> target through the shared code's mean (no noise); x carries the xy channels."""
        mu, _ = self.encode_shared(self.encode_front(x, source, train), train)
        return self.decode_back(self.decode_shared(mu, train), target, train)

    def __call__(self, x_a: Array, x_b: Array, eps: Array | None = None, train: bool = True
                 ) -> tuple[Array, ...]:
        n = x_a.shape[0]
        h0 = jnp.concatenate([self.encode_front(x_a, "A", train), self.encode_front(x_b, "B", train)])
        mu, sd = self.encode_shared(h0, train)
        z = mu if eps is None else mu + sd * eps
        h = self.decode_shared(z, train)
        out_a, out_b = self.decode_back(h, "A", train), self.decode_back(h, "B", train)
        return out_a[:n], out_a[n:], out_b[:n], out_b[n:], mu, sd


class GaussianVAE2D(nn.Module):
    """`g_vae`: 1x1 convs `en_mu` and `en_sigma` (softplus): the diagonal Gaussian posterior's
    mean and standard deviation per latent channel (the full mu/sigma VAE)."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        mu = layers.Conv2d(self.features, 1, name="en_mu")(x)
        sd = nn.softplus(layers.Conv2d(self.features, 1, name="en_sigma")(x))
        return mu, sd


class _ConvReLUPool(nn.Module):
    """`_conv2d` of CoDis32x32: `0` conv k5 s1 p2 -> ReLU -> MaxPool2d(2)."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = layers.Conv2d(self.features, 5, 1, 2, init_type="xavier_uniform", init_gain=2**0.5,
                          name="0")(x)
        x = nn.relu(x)
        return nn.max_pool(x, (2, 2), (2, 2))


def dropout(x: Array, rate: float, keep: Array | None) -> Array:
    """`nn.Dropout(rate)` with an explicit keep mask (None: eval mode, identity)."""
    if keep is None:
        return x
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def dropout_masks(key: Array, n: int, ch: int) -> tuple[Array, ...]:
    """Keep masks for the trunk's four dropouts on a batch of n (h0, h1, h2, h3 shapes)."""
    shapes = [(n, 16, 16, ch), (n, 8, 8, ch * 2), (n, 4, 4, ch * 4), (n, 2, 2, ch * 8)]
    keys = jax.random.split(key, len(shapes))
    return tuple(jax.random.bernoulli(k, 1.0 - r, s) for k, r, s in zip(keys, DROPOUT_RATES, shapes))


class CoDis32x32(nn.Module):
    """The coupled discriminator-classifier: `conv0_a`/`conv0_b` per domain, shared `conv1..3`,
    the real/fake head `conv4` (2 logits) and the digit head `conv_cl` (10 logits)."""

    ch: int = 64

    def setup(self) -> None:
        self.conv0_a = _ConvReLUPool(self.ch)
        self.conv0_b = _ConvReLUPool(self.ch)
        self.conv1 = _ConvReLUPool(self.ch * 2)
        self.conv2 = _ConvReLUPool(self.ch * 4)
        self.conv3 = _ConvReLUPool(self.ch * 8)
        head = dict(init_type="xavier_uniform", init_gain=2**0.5)
        self.conv4 = layers.Conv2d(2, 2, **head)
        self.conv_cl = layers.Conv2d(NUM_CLASSES, 2, **head)

    def front(self, x: Array, domain: str) -> Array:
        return self.conv0_a(x) if domain == "A" else self.conv0_b(x)

    def core(self, h0: Array, keep: Sequence[Array] | None = None) -> Array:
        """The shared trunk; `keep`: the four dropout masks (training) or None (no dropout)."""
        k = (None,) * 4 if keep is None else tuple(keep)
        h0 = dropout(h0, DROPOUT_RATES[0], k[0])
        h1 = dropout(self.conv1(h0), DROPOUT_RATES[1], k[1])
        h2 = dropout(self.conv2(h1), DROPOUT_RATES[2], k[2])
        return dropout(self.conv3(h2), DROPOUT_RATES[3], k[3])

    def classify(self, x: Array, domain: str, keep: Sequence[Array] | None = None) -> Array:
        """`classify_a` / `classify_b`: digit logits (N, 10) of domain images."""
        h3 = self.core(self.front(x, domain), keep)
        return layers.at_least_f32(self.conv_cl(h3))[:, 0, 0, :]

    def __call__(self, x_a: Array, x_b: Array, keep: Sequence[Array] | None = None
                 ) -> tuple[Array, Array, Array]:
        """The reference's `forward`: real/fake logits (2N, 2) of the dropout trunk on both
        batches, and each domain's dropout-free trunk features h3 (N, 2, 2, 8ch)."""
        h0_a, h0_b = self.front(x_a, "A"), self.front(x_b, "B")
        h3_a, h3_b = self.core(h0_a), self.core(h0_b)
        logits = self.conv4(self.core(jnp.concatenate([h0_a, h0_b]), keep))
        if self.is_initializing():
            self.conv_cl(h3_a)
        return layers.at_least_f32(logits)[:, 0, 0, :], h3_a, h3_b
