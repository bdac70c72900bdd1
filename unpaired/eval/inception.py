"""pytorch-fid's FID InceptionV3 pool3 features in Flax, weights from its `.pth` file without torch.

The layout is `fid_inception_v3()` (torchvision's Inception3 with pytorch-fid's FID blocks:
count_include_pad=False average pools in Mixed_5b..7b, a max pool in Mixed_7c's pool
branch) and Flax submodule names are its state_dict names, so
`Mixed_6b.branch7x7_2.conv.weight` is params['Mixed_6b']['branch7x7_2']['conv']['kernel'].
Inputs as pytorch-fid takes them: [0, 1], bilinearly resized to 299 (align_corners=False,
no antialias) then mapped to [-1, 1]. The weight file is the user's
`pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's release); nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unpaired import layers

Array = jax.Array
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
MIN_SIZE = 75  # the smallest input side the network takes without resizing
HIGHEST = jax.lax.Precision.HIGHEST


class InceptionWeightsError(ValueError):
    """The Inception weight file is unset, missing or not pytorch-fid's layout (names the flag)."""


class _Conv(nn.Module):
    """A bias-free conv with an (kh, kw, C_in, C_out) kernel: torch's (out, in, kh, kw) weight."""

    features: int
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int]
    precision: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (*self.kernel, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
        return layers.conv2d(x, kernel.astype(x.dtype), stride=self.stride, padding=self.padding,
                             precision=self.precision)


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-3, eval mode) -> ReLU, as torchvision's BasicConv2d."""

    features: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: Array) -> Array:
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        x = _Conv(self.features, pair(self.kernel), self.stride, pair(self.padding), self.precision,
                  name="conv")(x)
        return nn.relu(layers.BatchNorm(eps=1e-3, name="bn")(x, train=False))


def _max_pool(x: Array, stride: int, padding: int = 0) -> Array:
    """F.max_pool2d(kernel_size=3, stride, padding) (padding never wins the max)."""
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((padding, padding),) * 2)


def _avg_pool(x: Array) -> Array:
    """F.avg_pool2d(3, stride=1, padding=1, count_include_pad=False): the FID blocks' pool."""
    return layers.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """Mixed_5b/c/d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""

    pool_features: int
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(64, 1, name="branch1x1")(x)
        b5 = conv(64, 5, padding=2, name="branch5x5_2")(conv(48, 1, name="branch5x5_1")(x))
        b3 = conv(64, 1, name="branch3x3dbl_1")(x)
        b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(conv(96, 3, padding=1, name="branch3x3dbl_2")(b3))
        bp = conv(self.pool_features, 1, name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    """Mixed_6a: 3x3 stride 2 | 1x1-3x3-3x3 stride 2 | max pool stride 2."""

    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(384, 3, stride=2, name="branch3x3")(x)
        bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(conv(64, 1, name="branch3x3dbl_1")(x))
        bd = conv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], -1)


class FIDInceptionC(nn.Module):
    """Mixed_6b..e: 1x1 | 1x7-7x1 | 7x1-1x7-7x1-1x7 | avg pool-1x1."""

    channels_7x7: int
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        c7 = self.channels_7x7
        row = dict(kernel=(1, 7), padding=(0, 3))
        col = dict(kernel=(7, 1), padding=(3, 0))
        b1 = conv(192, 1, name="branch1x1")(x)
        b7 = conv(c7, 1, name="branch7x7_1")(x)
        b7 = conv(192, name="branch7x7_3", **col)(conv(c7, name="branch7x7_2", **row)(b7))
        bd = conv(c7, 1, name="branch7x7dbl_1")(x)
        for i, (width, shape) in enumerate(((c7, col), (c7, row), (c7, col), (192, row)), start=2):
            bd = conv(width, name=f"branch7x7dbl_{i}", **shape)(bd)
        bp = conv(192, 1, name="branch_pool")(_avg_pool(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    """Mixed_7a: 1x1-3x3 stride 2 | 1x1-1x7-7x1-3x3 stride 2 | max pool stride 2."""

    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(320, 3, stride=2, name="branch3x3_2")(conv(192, 1, name="branch3x3_1")(x))
        b7 = conv(192, 1, name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], -1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (`pool='avg'`, FIDInceptionE_1) and Mixed_7c (`pool='max'`, FIDInceptionE_2)."""

    pool: str
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        row = dict(kernel=(1, 3), padding=(0, 1))
        col = dict(kernel=(3, 1), padding=(1, 0))
        b1 = conv(320, 1, name="branch1x1")(x)
        b3 = conv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, name="branch3x3_2a", **row)(b3),
                              conv(384, name="branch3x3_2b", **col)(b3)], -1)
        bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(conv(448, 1, name="branch3x3dbl_1")(x))
        bd = jnp.concatenate([conv(384, name="branch3x3dbl_3a", **row)(bd),
                              conv(384, name="branch3x3dbl_3b", **col)(bd)], -1)
        pooled = _avg_pool(x) if self.pool == "avg" else _max_pool(x, 1, 1)
        return jnp.concatenate([b1, b3, bd, conv(192, 1, name="branch_pool")(pooled)], -1)


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of F.interpolate(mode='bilinear', align_corners=False) on one axis."""
    f32 = np.float32  # torch computes the source positions and weights in float32
    m = np.zeros((n_out, n_in), f32)
    scale = f32(n_in) / f32(n_out)
    for i in range(n_out):
        src = max(scale * (f32(i) + f32(0.5)) - f32(0.5), f32(0))
        lo = min(int(src), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = src - f32(lo)
        m[i, lo] += f32(1) - frac
        m[i, hi] += frac
    return m


def resize_bilinear(x: Array, size: int = 299) -> Array:
    """NHWC images resized as torch's bilinear interpolate (no antialias), two exact matmuls."""
    rows = jnp.asarray(resize_matrix(x.shape[1], size), x.dtype)
    cols = jnp.asarray(resize_matrix(x.shape[2], size), x.dtype)
    x = jnp.einsum("hH,nHWc->nhWc", rows, x, precision=HIGHEST)
    return jnp.einsum("wW,nhWc->nhwc", cols, x, precision=HIGHEST)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3(output_blocks=[3]): NHWC RGB in [0, 1] -> (B, 2048) pool3 features."""

    resize_input: bool = True
    normalize_input: bool = True
    precision: Any = HIGHEST

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        p = dict(precision=self.precision)
        if self.resize_input:
            x = resize_bilinear(x, 299)
        if self.normalize_input:
            x = 2 * x - 1
        x = conv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
        x = conv(32, 3, name="Conv2d_2a_3x3")(x)
        x = _max_pool(conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x), 2)
        x = conv(80, 1, name="Conv2d_3b_1x1")(x)
        x = _max_pool(conv(192, 3, name="Conv2d_4a_3x3")(x), 2)
        for name, pool_features in (("5b", 32), ("5c", 64), ("5d", 64)):
            x = FIDInceptionA(pool_features, name=f"Mixed_{name}", **p)(x)
        x = InceptionB(name="Mixed_6a", **p)(x)
        for name, c7 in (("6b", 128), ("6c", 160), ("6d", 160), ("6e", 192)):
            x = FIDInceptionC(c7, name=f"Mixed_{name}", **p)(x)
        x = InceptionD(name="Mixed_7a", **p)(x)
        x = FIDInceptionE("avg", name="Mixed_7b", **p)(x)
        x = FIDInceptionE("max", name="Mixed_7c", **p)(x)
        return jnp.mean(x, axis=(1, 2))


def variables_template() -> dict[str, Any]:
    """Shapes and dtypes of the network's variables (nothing computed)."""
    x = jnp.zeros((1, MIN_SIZE, MIN_SIZE, 3))
    return jax.eval_shape(lambda: FIDInceptionV3(resize_input=False).init(jax.random.key(0), x))


_LEAVES = {("conv", "weight"): ("params", "kernel"), ("bn", "weight"): ("params", "scale"),
           ("bn", "bias"): ("params", "bias"), ("bn", "running_mean"): ("batch_stats", "mean"),
           ("bn", "running_var"): ("batch_stats", "var"),
           ("bn", "num_batches_tracked"): ("batch_stats", "num_batches_tracked")}


def variables_from_state_dict(state_dict: Mapping[str, Any], source: str = "state_dict",
                              key: str = "inception_weights") -> dict[str, Any]:
    """Our variables from a fid_inception_v3 state_dict (torch names; `fc.*` is not needed).

    Every conv and BN entry must be present with its shape (num_batches_tracked may be
    absent); else InceptionWeightsError naming `source`, the entry and `key`.
    """
    template = variables_template()
    out: dict[str, Any] = {"params": {}, "batch_stats": {}}
    seen = set()

    def put(collection: str, path: Sequence[str], leaf: str, target: Any) -> None:
        torch_name = ".".join(path)
        if torch_name not in state_dict:
            if leaf == "num_batches_tracked":
                value = np.zeros(target.shape, target.dtype)
            else:
                raise InceptionWeightsError(f"config.{key}: {source} has no entry {torch_name!r}; "
                                            f"expected pytorch-fid's {WEIGHTS_FILE}")
        else:
            value = np.asarray(state_dict[torch_name])
            seen.add(torch_name)
            if leaf == "kernel":
                value = value.transpose(2, 3, 1, 0)
            if value.shape != tuple(target.shape):
                raise InceptionWeightsError(f"config.{key}: {source} entry {torch_name!r} has shape "
                                            f"{value.shape}, expected {tuple(target.shape)}")
        node = out[collection]
        for part in path[:-2]:
            node = node.setdefault(part, {})
        node.setdefault(path[-2], {})[leaf] = jnp.asarray(value.astype(target.dtype))

    for (module, torch_leaf), (collection, leaf) in _LEAVES.items():
        for path, target in jax.tree_util.tree_flatten_with_path(template[collection])[0]:
            names = [p.key for p in path]
            if names[-2] == module and names[-1] == leaf:
                put(collection, names[:-2] + [module, torch_leaf], leaf, target)
    fc = state_dict.get("fc.weight")
    if fc is not None and tuple(np.shape(fc)) != (1008, FEATURE_DIM):
        raise InceptionWeightsError(f"config.{key}: {source} has a {np.shape(fc)} fc layer; pytorch-fid's "
                                    f"{WEIGHTS_FILE} has (1008, 2048) (torchvision's ImageNet "
                                    "Inception gives different FIDs)")
    unknown = sorted(k for k in state_dict if k not in seen and not k.startswith("fc."))
    if unknown:
        raise InceptionWeightsError(f"config.{key}: {source} has {len(unknown)} entries outside "
                                    f"pytorch-fid's layout, e.g. {unknown[:3]}")
    return out


def load_inception(path: str | os.PathLike | None, key: str = "inception_weights") -> dict[str, Any]:
    """The network's variables from pytorch-fid's weight file, read by the torch-free reader.

    An unset or missing path raises InceptionWeightsError naming `key` (the flag or config key).
    """
    from unpaired.weights import TorchFileError, load_state_dict_file  # pylint: disable=import-outside-toplevel

    if not path:
        raise InceptionWeightsError(f"config.{key} is not set: Inception FID/KID need pytorch-fid's "
                                    f"weight file {WEIGHTS_FILE} (nothing is downloaded)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InceptionWeightsError(f"config.{key}={path!r}: no such file (pytorch-fid's {WEIGHTS_FILE})")
    try:
        state_dict = load_state_dict_file(path)
    except TorchFileError as err:
        raise InceptionWeightsError(f"config.{key}={path!r}: {err}") from err
    return variables_from_state_dict(state_dict, source=path, key=key)


def inception_feature_fn(variables: Mapping[str, Any], resize_input: bool = True
                         ) -> Callable[[Array], Array]:
    """A jitted images -> (B, 2048) pool3 features; images NHWC in [-1, 1], 1 or 3 channels.

    Grayscale is repeated to RGB (as pytorch-fid's RGB conversion of a grayscale file does).
    """
    model = FIDInceptionV3(resize_input=resize_input)

    @jax.jit
    def apply(variables: Mapping[str, Any], images: Array) -> Array:
        x = (jnp.asarray(images, jnp.float32) + 1.0) / 2.0
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        return model.apply(variables, x)

    return lambda images: apply(variables, images)  # weights as arguments, not 95 MB of constants
