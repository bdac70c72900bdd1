"""DTN networks (Taigman et al. 2017) with the TensorFlow reference's semantics and names.

f (`content_extractor`), g (`generator`) and D (`discriminator`) of yunjey's
domain-transfer-network: every conv stride 2 with TF 'SAME'/'VALID' padding, slim
batch_norm (eps 1e-3, decay 0.95, biased moving variance), Glorot-uniform weights.
Flax submodule names are the TF scope names (conv1, bn1, conv_transpose1, ...), so
`TF_NAMES` maps a checkpoint's variables onto ours one to one. Facts: reference/dtn.md.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unpaired import layers

Array = jax.Array
SCOPES = {"f": "content_extractor", "g": "generator", "D": "discriminator"}
# (our collection, our leaf) for each TF variable leaf name.
TF_LEAVES = {
    "weights": ("params", "kernel"), "biases": ("params", "bias"),
    "gamma": ("params", "scale"), "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"), "moving_variance": ("batch_stats", "var"),
}


def _bn(name: str) -> layers.BatchNorm:
    """slim.batch_norm(decay=0.95, epsilon=1e-3, center, scale) as the shared BatchNorm."""
    return layers.BatchNorm(momentum=0.05, eps=1e-3, init_gain=0.0, running_var="biased",
                            name=name)


def _conv(features: int, kernel: int, padding: str, name: str, dtype: Any = None) -> layers.Conv2d:
    """slim.conv2d(stride=2, xavier_initializer()) with TF 'SAME' or 'VALID' padding."""
    mode = "tf_same" if padding == "SAME" else "zero"
    return layers.Conv2d(features, kernel, stride=2, padding=0, padding_mode=mode,
                         init_type="xavier_uniform", init_gain=1.0, dtype=dtype, name=name)


def _deconv(features: int, kernel: int, padding: str, name: str, dtype: Any = None) -> layers.ConvTranspose2d:
    """slim.conv2d_transpose(stride=2, xavier_initializer()); VALID is PyTorch's padding 0."""
    mode = "tf_same" if padding == "SAME" else "zero"
    return layers.ConvTranspose2d(features, kernel, stride=2, padding=0, output_padding=0,
                                  padding_mode=mode, init_type="xavier_uniform", init_gain=1.0,
                                  dtype=dtype, name=name)


F_ARCHS = ("code", "paper")
SIZES = (32, 64)  # image sides: the reference's 32x32 digits, 64x64 for faces (one more block)


def blocks(size: int) -> int:
    """Stride-2 3x3 blocks between a size x size image and 4x4: 3 at 32, 4 at 64."""
    if size not in SIZES:
        raise ValueError(f"DTN networks take {' or '.join(map(str, SIZES))}-pixel images, got {size}")
    return size.bit_length() - 3


def _paper_f(x: Array, nf: int, feature_dim: int, dtype: Any) -> Array:
    """The paper's f: four 3x3 stride-1 'SAME' convs (nf, 2nf, 4nf, feature_dim), each
    followed by max pooling (2x2, 2x2, 2x2, then 4x4) and ReLU; the feature is the
    (B, 1, 1, feature_dim) activation after the last pooling, before its ReLU."""
    for i, width in enumerate((nf, 2 * nf, 4 * nf), start=1):
        x = layers.Conv2d(width, 3, stride=1, padding=1, init_type="xavier_uniform",
                          init_gain=1.0, dtype=dtype, name=f"conv{i}")(x)
        x = nn.relu(nn.max_pool(x, (2, 2), strides=(2, 2)))
    x = layers.Conv2d(feature_dim, 3, stride=1, padding=1, init_type="xavier_uniform",
                      init_gain=1.0, dtype=dtype, name="conv4")(x)
    return nn.max_pool(x, (4, 4), strides=(4, 4))


class ContentExtractor(nn.Module):
    """f: 32x32 (or 64x64, 'code' only) image -> (B, 1, 1, feature_dim); `logits=True` adds
    the `out` head.

    `arch='code'`: the TF code's stride-2 convs + BN, feature in (-1, 1) (tanh);
    `arch='paper'`: conv + max-pool (`_paper_f`), no BN, the head on ReLU(feature).
    1-channel inputs are repeated to 3 channels, as tf.image.grayscale_to_rgb does.
    """

    nf: int = 64
    feature_dim: int = 128
    num_classes: int = 10
    dtype: Any = None
    arch: str = "code"

    @nn.compact
    def __call__(self, x: Array, train: bool = True, logits: bool = False) -> Array:
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if self.arch == "paper":
            x = _paper_f(x, self.nf, self.feature_dim, self.dtype)
            if self.is_initializing() or logits:
                out = layers.Conv2d(self.num_classes, 1, init_type="xavier_uniform", init_gain=1.0,
                                    dtype=self.dtype, name="out")(nn.relu(x))
                if logits:
                    return out.reshape(x.shape[0], -1)
            return x
        n = blocks(x.shape[1])
        for i in range(1, n + 1):
            x = _conv(self.nf * 2 ** (i - 1), 3, "SAME", f"conv{i}", self.dtype)(x)
            x = nn.relu(_bn(f"bn{i}")(x, train))
        x = _conv(self.feature_dim, 4, "VALID", f"conv{n + 1}", self.dtype)(x)
        x = jnp.tanh(_bn(f"bn{n + 1}")(x, train))
        if self.is_initializing() or logits:  # the head always exists, so f's tree is one shape
            out = _conv(self.num_classes, 1, "VALID", "out", self.dtype)(x).reshape(x.shape[0], -1)
            if logits:
                return out
        return x


class Generator(nn.Module):
    """g: (B, 1, 1, feature_dim) -> (B, size, size, output_nc) in (-1, 1): TF deconvs,
    4x4 VALID to 4x4 then 3x3 SAME doublings (32: the reference's four layers; 64: five)."""

    ngf: int = 128
    output_nc: int = 1
    dtype: Any = None
    size: int = 32

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        n = blocks(self.size)
        x = _deconv(self.ngf * 2 ** (n - 1), 4, "VALID", "conv_transpose1", self.dtype)(x)
        x = nn.relu(_bn("bn1")(x, train))
        for i in range(2, n + 1):
            x = _deconv(self.ngf * 2 ** (n - i), 3, "SAME", f"conv_transpose{i}", self.dtype)(x)
            x = nn.relu(_bn(f"bn{i}")(x, train))
        return jnp.tanh(_deconv(self.output_nc, 3, "SAME", f"conv_transpose{n + 1}", self.dtype)(x))


class Discriminator(nn.Module):
    """D: 32x32 (or 64x64: one more block) image -> (B, num_outputs) logits; 1 (the code's
    binary D) or 3 (the paper's).

    conv1 has its own ReLU before bn1 + ReLU, as in the reference.
    """

    ndf: int = 128
    num_outputs: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        n = blocks(x.shape[1])
        x = nn.relu(_conv(self.ndf, 3, "SAME", "conv1", self.dtype)(x))
        x = nn.relu(_bn("bn1")(x, train))
        for i in range(2, n + 1):
            x = _conv(self.ndf * 2 ** (i - 1), 3, "SAME", f"conv{i}", self.dtype)(x)
            x = nn.relu(_bn(f"bn{i}")(x, train))
        x = _conv(self.num_outputs, 4, "VALID", f"conv{n + 1}", self.dtype)(x)
        return x.reshape(x.shape[0], -1)


def tf_names(network: str, variables: Mapping[str, Any]) -> dict[str, tuple[str, str, str]]:
    """{TF variable name: (collection, layer, leaf)} for every TF-named variable of `network`.

    E.g. 'generator/bn1/moving_mean' -> ('batch_stats', 'bn1', 'mean'). BatchNorm's
    `num_batches_tracked` has no TF counterpart and is left out.
    """
    ours_to_tf = {v: k for k, v in TF_LEAVES.items() if k != "beta"}
    table = {}
    for collection in ("params", "batch_stats"):
        for layer, leaves in variables.get(collection, {}).items():
            for leaf in leaves:
                key = (collection, leaf)
                if key == ("params", "bias") and layer.startswith("bn"):
                    tf_leaf = "beta"
                elif key in ours_to_tf:
                    tf_leaf = ours_to_tf[key]
                else:
                    continue
                table[f"{SCOPES[network]}/{layer}/{tf_leaf}"] = (collection, layer, leaf)
    return table


def to_tf(network: str, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """{TF variable name: array in TF layout} (our kernels already are [kh, kw, in|out, out|in])."""
    return {name: np.asarray(variables[c][layer][leaf])
            for name, (c, layer, leaf) in tf_names(network, variables).items()}


def from_tf(network: str, arrays: Mapping[str, Any], template: Mapping[str, Any],
            source: str = "weights", optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """`network`'s variables from TF-named arrays, shapes checked against `template`.

    Layers named in `optional` (e.g. f's `out` head, absent from dtn-* checkpoints)
    keep the template's values when missing; anything else missing or misshaped raises
    ValueError naming the variable and `source`.
    """
    out = jax.tree.map(lambda x: np.asarray(x), dict(template))
    out = {c: {layer: dict(leaves) for layer, leaves in tree.items()} for c, tree in out.items()}
    for name, (c, layer, leaf) in tf_names(network, template).items():
        if name not in arrays:
            if layer in optional:
                continue
            raise ValueError(f"{source}: variable {name} is missing")
        value = np.asarray(arrays[name])
        expected = tuple(template[c][layer][leaf].shape)
        if value.shape != expected:
            raise ValueError(f"{source}: {name} has shape {value.shape}, expected {expected} "
                             "(do the config's widths match the checkpoint?)")
        out[c][layer][leaf] = value.astype(template[c][layer][leaf].dtype)
    return jax.tree.map(jnp.asarray, out)


_TORCH_LEAVES = {"weights": "weight", "biases": "bias", "gamma": "weight", "beta": "bias",
                 "moving_mean": "running_mean", "moving_variance": "running_var"}


def from_torch_state(network: str, state: Mapping[str, Any], template: Mapping[str, Any],
                     source: str = "weights", optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """`network`'s variables from a PyTorch state_dict named like the torch re-expression
    (`conv1.weight` [out, in, kh, kw], deconvs [in, out, kh, kw], `bn1.running_mean`, ...).

    A missing or misshaped entry raises ValueError naming the entry, its shape and the
    expected one in PyTorch layout; layers in `optional` may be absent.
    """
    arrays = {}
    for name, (c, layer, leaf) in tf_names(network, template).items():
        key = f"{layer}.{_TORCH_LEAVES[name.rsplit('/', 1)[1]]}"
        expected = tuple(template[c][layer][leaf].shape)
        if len(expected) == 4:
            expected = (expected[3], expected[2], expected[0], expected[1])
        if key not in state:
            if layer in optional:
                continue
            raise ValueError(f"{source}: state_dict entry {key} ({network}'s {layer}) is missing")
        value = np.asarray(state[key])
        if value.shape != expected:
            raise ValueError(f"{source}: state_dict entry {key} has shape {value.shape}, expected "
                             f"{expected} (do the config's widths and image size match it?)")
        arrays[name] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
    return from_tf(network, arrays, template, source, optional)
