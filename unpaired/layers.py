"""Layers with PyTorch semantics in NHWC: padding, conv, transposed conv, norms, dropout.

Every method's networks are built from these, so that PyTorch weights map onto them
one to one (see `unpaired.torch_io`) and outputs match the reference implementations.
Convolutions never use 'SAME' padding: XLA's SAME pads (0, 1) for even sizes with
stride 2, which shifts the sampling grid against PyTorch's symmetric padding.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
Dtype = Any

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
PADDING_MODES = ("zero", "reflect", "replicate", "tf_same")
NORMS = ("instance", "batch", "none")


INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal", "xavier_uniform")


def normal_init(stddev: float = 0.02) -> Callable[..., Array]:
    """The reference's `init_weights('normal')`: N(0, stddev) for conv weights."""
    return nn.initializers.normal(stddev=stddev)


def _torch_order(matrix: Array, shape: Sequence[int]) -> Array:
    """A (out, in * k * k) matrix in PyTorch's weight order, laid out as our kernel `shape`.

    Our kernels (k, k, A, B) and dense kernels (A, B) are PyTorch weights (B, A, k, k) and
    (B, A) with axes reversed as (2, 3, 1, 0) / (1, 0); `orthogonal_` flattens from dim 1.
    """
    a, b = shape[-2], shape[-1]
    spatial = tuple(shape[:-2])
    torch_layout = matrix.reshape((b, a) + spatial)
    n = len(spatial)
    return jnp.transpose(torch_layout, tuple(range(2, 2 + n)) + (1, 0))


def orthogonal_init(gain: float = 1.0) -> Callable[..., Array]:
    """`torch.nn.init.orthogonal_(w, gain)` on the PyTorch weight our kernel stands for.

    The (out, in * k * k) matrix has orthonormal rows (or columns, if taller than wide)
    times `gain`: QR of a Gaussian with the signs of R's diagonal folded into Q.
    """

    def init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
        rows = shape[-1]
        cols = 1
        for d in shape[:-1]:
            cols *= d
        flat = jax.random.normal(key, (rows, cols), jnp.float32)
        if rows < cols:
            flat = flat.T
        q, r = jnp.linalg.qr(flat)
        q = q * jnp.sign(jnp.diagonal(r))[None, :]
        if rows < cols:
            q = q.T
        return (gain * _torch_order(q, shape)).astype(dtype)

    return init


def weight_init(init_type: str = "normal", gain: float = 0.02) -> Callable[..., Array]:
    """The reference's `init_weights(init_type, init_gain)` for a Conv/ConvTranspose/Linear weight.

    normal: N(0, gain); xavier: `xavier_normal_(gain)`; kaiming: `kaiming_normal_(a=0,
    mode='fan_in')` (gain unused); orthogonal: `orthogonal_(gain)`. Fans are PyTorch's:
    for our (k, k, A, B) kernel, fan_in = A * k * k and fan_out = B * k * k, which is what
    Flax's default axes (in -2, out -1) compute, for ConvTranspose2d's layout too.
    """
    if init_type == "normal":
        return normal_init(gain)
    if init_type == "xavier":
        return nn.initializers.variance_scaling(gain**2, "fan_avg", "normal")
    if init_type == "kaiming":
        return nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    if init_type == "orthogonal":
        return orthogonal_init(gain)
    if init_type == "xavier_uniform":  # TF's glorot_uniform (gain 1): U(-a, a), a = sqrt(6 / fan sum)
        return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")
    raise ValueError(f"unknown init_type {init_type!r}; expected one of {INIT_TYPES}")


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    first, second = value
    return (int(first), int(second))


def pad2d(x: Array, padding: int | Sequence[int], mode: str = "zero") -> Array:
    """Pads H and W like `nn.ReflectionPad2d`, `nn.ReplicationPad2d` or `nn.ZeroPad2d`.

    `padding` is an int or (top, bottom, left, right), PyTorch's order is (left, right,
    top, bottom); we use the NHWC axis order instead.
    """
    if isinstance(padding, int):
        top = bottom = left = right = padding
    else:
        top, bottom, left, right = padding
    widths = ((0, 0), (top, bottom), (left, right), (0, 0))
    if mode == "zero":
        return jnp.pad(x, widths)
    if mode == "reflect":
        # 'reflect' excludes the edge pixel, as ReflectionPad2d does ('symmetric' would not).
        return jnp.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return jnp.pad(x, widths, mode="edge")
    raise ValueError(f"unknown padding mode {mode!r}; expected one of {PADDING_MODES}")


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' (before, after) padding of one axis: output ceil(size / stride).

    The total is split with the extra pixel after: (0, 1) for a 3x3 stride-2 conv on an
    even size, where PyTorch's padding=1 pads (1, 1) and samples a shifted grid.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def tf_same_conv_transpose2d(x: Array, kernel: Array, stride: int, precision: Any = None) -> Array:
    """TF `conv2d_transpose(..., padding='SAME')`: output side = input side * stride.

    The full transposed conv (PyTorch padding=0) cropped by the 'SAME' padding of the
    strided conv it is the adjoint of: for 3x3 stride 2, the first 2n rows and columns.
    """
    k = kernel.shape[0]
    full = conv_transpose2d(x, kernel, stride, 0, 0, precision)
    (top, _), (left, _) = (tf_same_padding(x.shape[i] * stride, k, stride) for i in (1, 2))
    h, w = x.shape[1] * stride, x.shape[2] * stride
    return full[:, top:top + h, left:left + w, :]


def _conv_xla(
    x: Array, kernel: Array, stride: tuple[int, int], pad: tuple[int, int], precision: Any
) -> Array:
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=stride,
        padding=((pad[0], pad[0]), (pad[1], pad[1])),
        dimension_numbers=DIMENSION_NUMBERS,
        precision=precision,
    )


def conv_patches(
    x: Array, kernel_hw: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int]
) -> Array:
    """im2col in NHWC: (N, H_out, W_out, kh * kw * C), taps in the (i, j, c) order of HWIO."""
    if pad != (0, 0):
        x = jnp.pad(x, ((0, 0), (pad[0], pad[0]), (pad[1], pad[1]), (0, 0)))
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = kernel_hw, stride
    h_out, w_out = (h - kh) // sh + 1, (w - kw) // sw + 1
    taps = [
        lax.slice(x, (0, i, j, 0), (n, i + sh * (h_out - 1) + 1, j + sw * (w_out - 1) + 1, c),
                  (1, sh, sw, 1))
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.concatenate(taps, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_small_output(
    x: Array, kernel: Array, stride: tuple[int, int], pad: tuple[int, int], precision: Any
) -> Array:
    """A conv whose output is smaller than its kernel (the PatchGAN's last layers on small
    images): the same forward and weight gradient, but the input gradient as a matmul and
    its col2im. Its backward-data conv would have a window larger than its input, which
    XLA:CPU runs with swapped operands and a slow layout (8x the forward's time)."""
    return _conv_xla(x, kernel, stride, pad, precision)


def _conv_small_output_fwd(x, kernel, stride, pad, precision):
    return _conv_xla(x, kernel, stride, pad, precision), (x, kernel)


def _conv_small_output_bwd(stride, pad, precision, residuals, g):
    x, kernel = residuals
    kh, kw, c_in, c_out = kernel.shape
    _, kernel_vjp = jax.vjp(lambda k: _conv_xla(x, k, stride, pad, precision), kernel)
    (dkernel,) = kernel_vjp(g)
    dcols = lax.dot_general(
        g, kernel.reshape(kh * kw * c_in, c_out).astype(g.dtype), (((3,), (1,)), ((), ())),
        precision=precision,
    )
    _, patches_vjp = jax.vjp(lambda u: conv_patches(u, (kh, kw), stride, pad), x)
    (dx,) = patches_vjp(dcols.astype(x.dtype))
    return dx, dkernel


_conv_small_output.defvjp(_conv_small_output_fwd, _conv_small_output_bwd)


def conv2d(
    x: Array, kernel: Array, *, stride: int = 1, padding: int = 0, precision: Any = None
) -> Array:
    """`F.conv2d` on NHWC input with an HWIO kernel and symmetric zero padding.

    An output smaller than the kernel is an im2col matmul on CPU (`_conv_as_matmul`) and
    goes through `_conv_small_output` elsewhere; every other conv is XLA's convolution.
    """
    stride, pad = _pair(stride), _pair(padding)
    kh, kw = kernel.shape[:2]
    h_out = (x.shape[1] + 2 * pad[0] - kh) // stride[0] + 1
    w_out = (x.shape[2] + 2 * pad[1] - kw) // stride[1] + 1
    if h_out < kh or w_out < kw:
        if jax.default_backend() == "cpu":
            return _conv_as_matmul(x, kernel, stride, pad, precision)
        return _conv_small_output(x, kernel, stride, pad, precision)
    if stride == (1, 1) and pad == (0, 0) and (kh > 1 or kw > 1) and jax.default_backend() == "cpu":
        return _conv_unpadded_via_padded(x, kernel, precision)
    return _conv_xla(x, kernel, stride, pad, precision)


def _conv_as_matmul(
    x: Array, kernel: Array, stride: tuple[int, int], pad: tuple[int, int], precision: Any
) -> Array:
    """The conv as im2col @ kernel, for convs whose output is smaller than their kernel on CPU.

    XLA:CPU runs such a conv (window larger than its output, as in UNIT DA's 5x5 conv over
    a 4x4 map, or an 8x8 conv to 1x1) on a generic loop: 550 ms for CoDis32x32's conv3 at
    batch 8, against 5 ms as this matmul; its gradients are a matmul each and the patches'
    transpose (pads and adds). The same products are summed, in another order.
    """
    kh, kw, c_in, c_out = kernel.shape
    cols = conv_patches(x, (kh, kw), stride, pad)
    return lax.dot_general(cols, kernel.reshape(kh * kw * c_in, c_out),
                           (((3,), (0,)), ((), ())), precision=precision)


def _conv_unpadded_same(x: Array, kernel: Array, precision: Any) -> Array:
    """The stride-1 conv without padding as the zero-padded ('same') conv cropped back."""
    kh, kw = kernel.shape[:2]
    ph, pw = kh // 2, kw // 2
    h_out, w_out = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    y = _conv_xla(x, kernel, (1, 1), (ph, pw), precision)
    return lax.slice(y, (0, ph, pw, 0), (y.shape[0], ph + h_out, pw + w_out, y.shape[3]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_unpadded_via_padded(x: Array, kernel: Array, precision: Any) -> Array:
    """A stride-1 conv without padding, run as the zero-padded ('same') conv cropped back.

    Every kept output sums the same products (the border outputs are cut away, and so
    are their cotangents); only the accumulation order may differ, by rounding. XLA:CPU
    runs a conv that pads by itself about 3x faster than one on an input padded before it
    (measured at 64x64x256: 23 against 65 GFLOP/s), and every reflect- or replicate-padded
    conv of the generators is such a conv. The input gradient is the padded form's too; the
    weight gradient is the plain (VALID) conv's: the padded form's is 10x slower where the
    output has few channels (the generators' last 7x7 conv to RGB: 100 ms against 10 at
    64x64). CPU only: on GPU/TPU it would add FLOPs for nothing (6% at 64 px, 3x3).
    """
    return _conv_unpadded_same(x, kernel, precision)


def _conv_unpadded_fwd(x, kernel, precision):
    return _conv_unpadded_same(x, kernel, precision), (x, kernel)


def _conv_unpadded_bwd(precision, residuals, g):
    x, kernel = residuals
    (dx,) = jax.vjp(lambda u: _conv_unpadded_same(u, kernel, precision), x)[1](g)
    (dkernel,) = jax.vjp(lambda k: _conv_xla(x, k, (1, 1), (0, 0), precision), kernel)[1](g)
    return dx, dkernel


_conv_unpadded_via_padded.defvjp(_conv_unpadded_fwd, _conv_unpadded_bwd)


def _conv_transpose_direct(
    x: Array, kernel: Array, stride: int, padding: int, output_padding: int, precision: Any
) -> Array:
    """The transposed conv as an lhs-dilated conv with the spatially flipped kernel.

    `kernel` has shape (k, k, C_out, C_in): the HWIO kernel of the strided conv whose
    adjoint this is. The 'HWOI' dimension numbers read it as a C_in -> C_out kernel
    without a transpose; the flip makes XLA see the backward-input pattern.
    """
    k = kernel.shape[0]
    low = k - 1 - padding
    high = k - 1 - padding + output_padding
    return lax.conv_general_dilated(
        x,
        lax.rev(kernel, (0, 1)),
        window_strides=(1, 1),
        padding=((low, high), (low, high)),
        lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWOI", "NHWC"),
        precision=precision,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def conv_transpose2d(
    x: Array,
    kernel: Array,
    stride: int = 2,
    padding: int = 1,
    output_padding: int = 1,
    precision: Any = None,
) -> Array:
    """`F.conv_transpose2d(x, W, stride, padding, output_padding)` in NHWC.

    `kernel[kh, kw, o, i] == W[i, o, kh, kw]` where W is PyTorch's (C_in, C_out, k, k)
    ConvTranspose2d weight: the same tensor as the HWIO kernel of the strided conv from
    C_out to C_in whose adjoint this layer is. The custom VJP computes the input and
    weight gradients as that strided conv and its weight gradient, the way PyTorch/cuDNN
    do, instead of differentiating an lhs-dilated conv (whose weight gradient XLA
    lowers to a slow zero-stuffed forward conv on GPUs). Values are unchanged.
    """
    return _conv_transpose_direct(x, kernel, stride, padding, output_padding, precision)


def _conv_transpose_fwd(x, kernel, stride, padding, output_padding, precision):
    y = _conv_transpose_direct(x, kernel, stride, padding, output_padding, precision)
    return y, (x, kernel)


def _conv_transpose_bwd(stride, padding, output_padding, precision, residuals, g):
    x, kernel = residuals

    def strided(u: Array, k: Array) -> Array:
        return conv2d(u, k, stride=stride, padding=padding, precision=precision)

    # y = A^T x with A u = strided(u, K)  =>  dx = A g  and  dK = d/dK <x, strided(g, K)>.
    dx = strided(g, kernel)
    _, kernel_vjp = jax.vjp(lambda k: strided(g, k), kernel)
    (dkernel,) = kernel_vjp(x.astype(dx.dtype))
    return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


conv_transpose2d.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


class Conv2d(nn.Module):
    """`nn.Conv2d` (+ optional pad module in front of it) with the reference's init (N(0, 0.02)).

    `padding_mode='zero'` pads inside the conv like PyTorch's `padding=`; 'reflect' and
    'replicate' pad first, as the reference's `ReflectionPad2d` + `Conv2d(padding=0)` do;
    'tf_same' pads as TensorFlow's padding='SAME' (`tf_same_padding`; `padding` unused).
    Parameters: `kernel` (k, k, C_in, C_out) and `bias` (C_out,).
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    padding_mode: str = "zero"
    use_bias: bool = True
    init_gain: float = 0.02
    dtype: Dtype | None = None
    precision: Any = None
    init_type: str = "normal"  # normal | xavier | kaiming | orthogonal (see `weight_init`)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param(
            "kernel",
            weight_init(self.init_type, self.init_gain),
            (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
            jnp.float32,
        )
        dtype = self.dtype or x.dtype
        x = x.astype(dtype)
        conv_padding = self.padding
        if self.padding_mode == "tf_same":
            top, bottom = tf_same_padding(x.shape[1], self.kernel_size, self.stride)
            left, right = tf_same_padding(x.shape[2], self.kernel_size, self.stride)
            x = pad2d(x, (top, bottom, left, right))
            conv_padding = 0
        elif self.padding_mode != "zero" and self.padding:
            x = pad2d(x, self.padding, self.padding_mode)
            conv_padding = 0
        y = conv2d(
            x, kernel.astype(dtype), stride=self.stride, padding=conv_padding,
            precision=self.precision,
        )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(dtype)
        return y


class ConvTranspose2d(nn.Module):
    """`nn.ConvTranspose2d(k, stride, padding, output_padding)`; kernel is (k, k, C_out, C_in).

    The kernel layout is PyTorch's weight (C_in, C_out, k, k) with axes (2, 3, 1, 0),
    the same transform as an ordinary conv weight, so checkpoints convert uniformly (and
    TF's conv2d_transpose filter [kh, kw, out, in] as it is). `padding_mode='tf_same'`
    is TF's padding='SAME' (`tf_same_conv_transpose2d`; padding, output_padding unused).
    """

    features: int
    kernel_size: int = 3
    stride: int = 2
    padding: int = 1
    output_padding: int = 1
    padding_mode: str = "zero"  # zero (PyTorch's padding/output_padding) | tf_same
    use_bias: bool = True
    init_gain: float = 0.02
    dtype: Dtype | None = None
    precision: Any = None
    init_type: str = "normal"  # normal | xavier | kaiming | orthogonal (see `weight_init`)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param(
            "kernel",
            weight_init(self.init_type, self.init_gain),
            (self.kernel_size, self.kernel_size, self.features, x.shape[-1]),
            jnp.float32,
        )
        dtype = self.dtype or x.dtype
        if self.padding_mode == "tf_same":
            y = tf_same_conv_transpose2d(x.astype(dtype), kernel.astype(dtype), self.stride,
                                         self.precision)
        else:
            y = conv_transpose2d(
                x.astype(dtype), kernel.astype(dtype), self.stride, self.padding,
                self.output_padding, self.precision,
            )
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
            y = y + bias.astype(dtype)
        return y


def at_least_f32(x: Array) -> Array:
    """x in float32, or float64 if it already is (bf16 statistics and losses in float32)."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def instance_norm(x: Array, eps: float = 1e-5) -> Array:
    """Affine-free `nn.InstanceNorm2d`: per sample and channel over H, W, biased variance.

    Statistics are computed in at least float32 (two-pass variance, for tight parity) and the
    result is returned in the input dtype, so bf16 activations stay bf16.
    """
    xf = at_least_f32(x)
    mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
    centered = xf - mean
    var = jnp.mean(jnp.square(centered), axis=(1, 2), keepdims=True)
    return (centered * lax.rsqrt(var + eps)).astype(x.dtype)


class InstanceNorm(nn.Module):
    """Module wrapper of `instance_norm`; it has no parameters and no state."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        del train  # Instance statistics are used in train and eval mode alike.
        return instance_norm(x, self.eps)


class BatchNorm(nn.Module):
    """`nn.BatchNorm2d(affine=True, track_running_stats=True)` with PyTorch's statistics.

    Training normalises with the biased batch variance and updates the running variance
    with the unbiased one (momentum 0.1), as PyTorch does; Flax's own BatchNorm stores
    the biased variance, which would drift from a PyTorch checkpoint. Parameters `scale`
    (init N(1, 0.02), the reference's init) and `bias`; statistics `mean`, `var`,
    `num_batches_tracked` in the 'batch_stats' collection.

    TF's slim.batch_norm (decay 0.95, epsilon 1e-3) is momentum=0.05, eps=1e-3,
    running_var='biased' (its moving variance averages the biased batch variance) and
    init_gain=0 (gamma starts at exactly 1).
    """

    momentum: float = 0.1
    eps: float = 1e-5
    init_gain: float = 0.02
    running_var: str = "unbiased"  # unbiased (PyTorch) | biased (TF slim, Flax)
    scale_mean: float = 1.0  # UFDN's `weights_init` draws gamma from N(0, 0.02): scale_mean=0
    affine: bool = True  # False: `BatchNorm2d(affine=False)`, no scale/bias (UNIT's digit CoVAE)

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        features = x.shape[-1]
        scale_init = lambda key, shape, dtype: self.scale_mean + self.init_gain * jax.random.normal(
            key, shape, dtype
        )
        if self.affine:
            scale = self.param("scale", scale_init, (features,), jnp.float32)
            bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        else:
            scale, bias = 1.0, 0.0
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        tracked = self.variable(
            "batch_stats", "num_batches_tracked", lambda: jnp.zeros((), jnp.int32)
        )
        xf = at_least_f32(x)
        if train:
            mean, var = self.batch_moments(xf)
            groups = mean.shape[0] if mean.ndim == 2 else 1
            if not self.is_initializing():
                count = xf.shape[0] * xf.shape[1] * xf.shape[2] // groups
                tracked_var = var * (count / max(count - 1, 1)) if self.running_var == "unbiased" else var
                if groups > 1:  # per-group statistics: the running ones follow their average
                    tracked_mean, tracked_var = jnp.mean(mean, axis=0), jnp.mean(tracked_var, axis=0)
                else:
                    tracked_mean = mean
                m = self.momentum
                ra_mean.value = ((1 - m) * ra_mean.value + m * tracked_mean).astype(ra_mean.value.dtype)
                ra_var.value = ((1 - m) * ra_var.value + m * tracked_var).astype(ra_var.value.dtype)
                tracked.value = tracked.value + 1
        else:
            mean, var = ra_mean.value, ra_var.value
        if mean.ndim == 2:  # (groups, C): each contiguous slice of the batch by its own statistics
            g = xf.reshape(mean.shape[0], -1, *xf.shape[1:])
            y = (g - mean[:, None, None, None]) * lax.rsqrt(var[:, None, None, None] + self.eps)
            return (y.reshape(xf.shape) * scale + bias).astype(x.dtype)
        y = (xf - mean) * lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(x.dtype)

    def batch_moments(self, xf: Array) -> tuple[Array, Array]:
        """Mean and biased variance over (N, H, W), shape (C,): statistics of the whole batch.

        `unpaired.distributed.per_device_batch_norm` intercepts this method to return
        (groups, C) statistics of contiguous batch slices (one per device).
        """
        mean = jnp.mean(xf, axis=(0, 1, 2))
        return mean, jnp.mean(jnp.square(xf - mean), axis=(0, 1, 2))


class Linear(nn.Module):
    """`nn.Linear` with PyTorch's (out, in) `weight` layout and default uniform init.

    The weight keeps the torch layout (named `weight`, not a transposed `kernel`), so
    `unpaired.torch_io` maps it to `<name>.weight` unchanged. Init: U(+-1/sqrt(fan_in)).
    """

    features: int
    use_bias: bool = True
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        fan_in = x.shape[-1]
        bound = 1.0 / max(fan_in, 1) ** 0.5
        uniform = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -bound, bound)
        weight = self.param("weight", uniform, (self.features, fan_in), jnp.float32)
        dtype = self.dtype or x.dtype
        y = jnp.dot(x.astype(dtype), weight.astype(dtype).T)
        if self.use_bias:
            y = y + self.param("bias", uniform, (self.features,), jnp.float32).astype(dtype)
        return y


class Identity(nn.Module):
    """The reference's `norm='none'` layer: it still takes a Sequential index."""

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        del train
        return x


def make_norm(norm: str, name: str, init_gain: float = 0.02) -> nn.Module:
    """Builds the norm layer the reference's `get_norm_layer(norm)` would."""
    if norm == "instance":
        return InstanceNorm(name=name)
    if norm == "batch":
        return BatchNorm(init_gain=init_gain, name=name)
    if norm == "none":
        return Identity(name=name)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def conv_bias_for(norm: str) -> bool:
    """The reference's bias rule: convs before a norm have a bias only under InstanceNorm."""
    return norm == "instance"


def leaky_relu(x: Array, slope: float = 0.2) -> Array:
    """`nn.LeakyReLU(0.2)`; the gradient at exactly 0 is `slope`, as in PyTorch."""
    return jnp.where(x > 0, x, slope * x)


# --- UNIT/MUNIT layers (mingyuliutw/UNIT master `networks.py`) ---------------------------


class SampleLayerNorm(nn.Module):
    """UNIT/MUNIT's custom `LayerNorm`: per-sample mean and *unbiased* std over (H, W, C),
    y = (x - mean) / (std + eps), then per-channel `gamma` (U(0, 1) at init) and `beta`.

    Not `nn.LayerNorm`: the std, not sqrt(var + eps), and the per-channel affine pair.
    """

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.uniform(1.0), (features,), jnp.float32)
        beta = self.param("beta", nn.initializers.zeros, (features,), jnp.float32)
        xf = at_least_f32(x)
        axes = tuple(range(1, x.ndim))
        count = 1
        for a in axes:
            count *= x.shape[a]
        mean = jnp.mean(xf, axis=axes, keepdims=True)
        var = jnp.sum(jnp.square(xf - mean), axis=axes, keepdims=True) / max(count - 1, 1)
        y = (xf - mean) / (jnp.sqrt(var) + self.eps)
        return (y * gamma.astype(y.dtype) + beta.astype(y.dtype)).astype(x.dtype)


def avg_pool2d(x: Array, kernel: int = 3, stride: int = 2, padding: int = 1,
               count_include_pad: bool = False) -> Array:
    """`nn.AvgPool2d(kernel, stride, padding, count_include_pad)` in NHWC (zero padding).

    With count_include_pad=False each window's sum is divided by its number of in-image cells.
    """
    window = (1, kernel, kernel, 1)
    strides = (1, stride, stride, 1)
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    xf = at_least_f32(x)
    total = lax.reduce_window(xf, 0.0, lax.add, window, strides, pads)
    if count_include_pad:
        count = float(kernel * kernel)
    else:
        ones = jnp.ones((1,) + x.shape[1:3] + (1,), xf.dtype)
        count = lax.reduce_window(ones, 0.0, lax.add, window, strides, pads)
    return (total / count).astype(x.dtype)


def upsample_nearest(x: Array, factor: int = 2) -> Array:
    """`nn.Upsample(scale_factor=factor)` (mode 'nearest') in NHWC."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
