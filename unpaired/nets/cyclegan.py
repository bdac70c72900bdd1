"""CycleGAN/pix2pix networks: ResNet and U-Net generators, PatchGAN and pixel discriminators.

Flax modules only. Submodule names spell the reference's `nn.Sequential` indices
(`model_4` is `model.4`, `conv_block_5` is `conv_block.5`) so that `unpaired.torch_io`
maps official state_dicts onto our parameters by one rule. Index bookkeeping follows
`models/networks.py` of junyanz/pytorch-CycleGAN-and-pix2pix (see
`shared/reference/cyclegan.md` §1): pads, activations and Identity norms take indices too.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from unpaired import layers

Array = jax.Array

GENERATORS = ("resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256")
DISCRIMINATORS = ("basic", "n_layers", "pixel")
# Image sides each generator accepts must be multiples of these: the ResNet generators
# downsample twice (and their transposed convs must give back the input size), a U-Net
# `num_downs` times (unet_128: 7, unet_256: 8), and its skip concatenations need equal sizes.
SIZE_MULTIPLES = {"resnet_9blocks": 4, "resnet_6blocks": 4, "unet_128": 128, "unet_256": 256}


class ResnetBlock(nn.Module):
    """`x + conv_block(x)`: pad, conv3, norm, ReLU, [dropout], pad, conv3, norm."""

    dim: int
    padding_type: str = "reflect"
    norm: str = "instance"
    use_dropout: bool = False
    init_gain: float = 0.02
    dtype: Any = None
    init_type: str = "normal"

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        use_bias = layers.conv_bias_for(self.norm)
        zero = self.padding_type == "zero"
        index = 0
        h = x
        for half in range(2):
            if not zero:
                index += 1  # ReflectionPad2d / ReplicationPad2d, folded into the conv.
            h = layers.Conv2d(
                self.dim, 3, padding=1,
                padding_mode="zero" if zero else self.padding_type,
                use_bias=use_bias, init_gain=self.init_gain, dtype=self.dtype,
                init_type=self.init_type, name=f"conv_block_{index}",
            )(h)
            h = layers.make_norm(self.norm, f"conv_block_{index + 1}", self.init_gain)(h, train)
            index += 2
            if half == 0:
                h = nn.relu(h)
                index += 1
                if self.use_dropout:
                    h = nn.Dropout(0.5, deterministic=not train)(h)
                    index += 1
        return x + h


class ResnetGenerator(nn.Module):
    """The reference ResnetGenerator: c7s1-ngf, two stride-2 downs, n blocks, two ups, c7s1, tanh."""

    output_nc: int = 3
    ngf: int = 64
    n_blocks: int = 9
    norm: str = "instance"
    use_dropout: bool = False
    padding_type: str = "reflect"
    init_gain: float = 0.02
    dtype: Any = None
    remat: bool = False  # Recompute each residual block in the backward pass to save memory.
    init_type: str = "normal"

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        use_bias = layers.conv_bias_for(self.norm)
        block = nn.remat(ResnetBlock, static_argnums=(2,)) if self.remat else ResnetBlock
        conv = lambda *a, **k: layers.Conv2d(
            *a, init_gain=self.init_gain, dtype=self.dtype, init_type=self.init_type, **k
        )
        norm = lambda i: layers.make_norm(self.norm, f"model_{i}", self.init_gain)
        h = conv(self.ngf, 7, padding=3, padding_mode="reflect", use_bias=use_bias,
                 name="model_1")(x)
        h = nn.relu(norm(2)(h, train))
        index = 4
        for i in range(2):  # Downsampling: model.4 and model.7.
            mult = 2**i
            h = conv(self.ngf * mult * 2, 3, stride=2, padding=1, use_bias=use_bias,
                     name=f"model_{index}")(h)
            h = nn.relu(norm(index + 1)(h, train))
            index += 3
        for _ in range(self.n_blocks):
            h = block(
                self.ngf * 4, self.padding_type, self.norm, self.use_dropout,
                self.init_gain, self.dtype, init_type=self.init_type, name=f"model_{index}",
            )(h, train)
            index += 1
        for i in range(2):  # Upsampling: ConvTranspose2d(k3, s2, p1, output_padding=1).
            mult = 2 ** (2 - i)
            h = layers.ConvTranspose2d(
                self.ngf * mult // 2, 3, stride=2, padding=1, output_padding=1,
                use_bias=use_bias, init_gain=self.init_gain, dtype=self.dtype,
                init_type=self.init_type, name=f"model_{index}",
            )(h)
            h = nn.relu(norm(index + 1)(h, train))
            index += 3
        index += 1  # ReflectionPad2d(3), folded into the final conv.
        h = conv(self.output_nc, 7, padding=3, padding_mode="reflect", use_bias=True,
                 name=f"model_{index}")(h)
        return jnp.tanh(layers.at_least_f32(h))


class UnetSkipBlock(nn.Module):
    """One U-Net level, built from the outside in: `levels[depth]` describes this block.

    Each level is (outer_nc, inner_nc, use_dropout). Depth 0 is the outermost block, the
    last level the innermost. Non-outermost blocks return concat([lrelu(x), model(x)]) on
    channels: the reference's in-place LeakyReLU overwrites x before the skip concat.
    """

    levels: Sequence[tuple[int, int, bool]]
    depth: int
    output_nc: int
    norm: str = "batch"
    init_gain: float = 0.02
    dtype: Any = None
    init_type: str = "normal"
    remat: bool = False  # Recompute each inner block in the backward pass (nested).

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        outer_nc, inner_nc, use_dropout = self.levels[self.depth]
        outermost = self.depth == 0
        innermost = self.depth == len(self.levels) - 1
        use_bias = layers.conv_bias_for(self.norm)
        kw = dict(init_gain=self.init_gain, dtype=self.dtype, init_type=self.init_type)
        norm = lambda i: layers.make_norm(self.norm, f"model_{i}", self.init_gain)
        block = nn.remat(UnetSkipBlock, static_argnums=(2,)) if self.remat else UnetSkipBlock
        sub = lambda i: block(
            self.levels, self.depth + 1, self.output_nc, self.norm, self.init_gain,
            self.dtype, self.init_type, self.remat, name=f"model_{i}",
        )
        if outermost:
            h = layers.Conv2d(inner_nc, 4, 2, 1, use_bias=use_bias, name="model_0", **kw)(x)
            h = sub(1)(h, train)
            h = nn.relu(h)
            h = layers.ConvTranspose2d(self.output_nc, 4, 2, 1, 0, use_bias=True,
                                       name="model_3", **kw)(h)
            return jnp.tanh(layers.at_least_f32(h))
        h = layers.leaky_relu(x)
        if innermost:
            h = layers.Conv2d(inner_nc, 4, 2, 1, use_bias=use_bias, name="model_1", **kw)(h)
            h = nn.relu(h)
            h = layers.ConvTranspose2d(outer_nc, 4, 2, 1, 0, use_bias=use_bias,
                                       name="model_3", **kw)(h)
            h = norm(4)(h, train)
        else:
            h = layers.Conv2d(inner_nc, 4, 2, 1, use_bias=use_bias, name="model_1", **kw)(h)
            h = norm(2)(h, train)
            h = sub(3)(h, train)
            h = nn.relu(h)
            h = layers.ConvTranspose2d(outer_nc, 4, 2, 1, 0, use_bias=use_bias,
                                       name="model_5", **kw)(h)
            h = norm(6)(h, train)
            if use_dropout:
                h = nn.Dropout(0.5, deterministic=not train)(h)
        skip = layers.leaky_relu(x)  # What the reference's in-place LeakyReLU leaves in x.
        return jnp.concatenate([skip, h.astype(x.dtype)], axis=-1)


class UnetGenerator(nn.Module):
    """The reference UnetGenerator (`unet_128`: 7 downs, `unet_256`: 8 downs)."""

    output_nc: int = 3
    num_downs: int = 8
    ngf: int = 64
    norm: str = "batch"
    use_dropout: bool = False
    init_gain: float = 0.02
    dtype: Any = None
    init_type: str = "normal"
    remat: bool = False  # Recompute every non-outermost skip block in the backward pass.

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        ngf = self.ngf
        levels = [(ngf, ngf * 2, False), (ngf * 2, ngf * 4, False), (ngf * 4, ngf * 8, False)]
        levels += [(ngf * 8, ngf * 8, self.use_dropout)] * (self.num_downs - 5)
        levels += [(ngf * 8, ngf * 8, False)]
        levels = [(self.output_nc, ngf, False)] + levels
        return UnetSkipBlock(
            tuple(levels), 0, self.output_nc, self.norm, self.init_gain, self.dtype,
            self.init_type, self.remat, name="model",
        )(x, train)


class NLayerDiscriminator(nn.Module):
    """The PatchGAN discriminator (`basic` is n_layers=3, the 70x70 PatchGAN); returns logits."""

    ndf: int = 64
    n_layers: int = 3
    norm: str = "instance"
    init_gain: float = 0.02
    dtype: Any = None
    init_type: str = "normal"

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        use_bias = layers.conv_bias_for(self.norm)
        kw = dict(init_gain=self.init_gain, dtype=self.dtype, init_type=self.init_type)
        h = layers.Conv2d(self.ndf, 4, 2, 1, use_bias=True, name="model_0", **kw)(x)
        h = layers.leaky_relu(h)
        index = 2
        nf_mult = 1
        for n in range(1, self.n_layers + 1):
            nf_mult = min(2**n, 8)
            stride = 2 if n < self.n_layers else 1
            h = layers.Conv2d(self.ndf * nf_mult, 4, stride, 1, use_bias=use_bias,
                              name=f"model_{index}", **kw)(h)
            h = layers.make_norm(self.norm, f"model_{index + 1}", self.init_gain)(h, train)
            h = layers.leaky_relu(h)
            index += 3
        h = layers.Conv2d(1, 4, 1, 1, use_bias=True, name=f"model_{index}", **kw)(h)
        return layers.at_least_f32(h)


class PixelDiscriminator(nn.Module):
    """The 1x1 PixelGAN discriminator (`--netD pixel`); returns per-pixel logits."""

    ndf: int = 64
    norm: str = "instance"
    init_gain: float = 0.02
    dtype: Any = None
    init_type: str = "normal"

    @nn.compact
    def __call__(self, x: Array, train: bool = True) -> Array:
        use_bias = layers.conv_bias_for(self.norm)
        kw = dict(init_gain=self.init_gain, dtype=self.dtype, init_type=self.init_type)
        h = layers.Conv2d(self.ndf, 1, use_bias=True, name="net_0", **kw)(x)
        h = layers.leaky_relu(h)
        h = layers.Conv2d(self.ndf * 2, 1, use_bias=use_bias, name="net_2", **kw)(h)
        h = layers.make_norm(self.norm, "net_3", self.init_gain)(h, train)
        h = layers.leaky_relu(h)
        h = layers.Conv2d(1, 1, use_bias=use_bias, name="net_5", **kw)(h)
        return layers.at_least_f32(h)


def define_G(
    netG: str, output_nc: int, ngf: int, norm: str, use_dropout: bool,
    init_gain: float = 0.02, dtype: Any = None, remat: bool = False,
    init_type: str = "normal",
) -> nn.Module:
    """The generator the reference's `define_G(netG=..., init_type=...)` builds.

    `remat` recomputes ResNet blocks, or U-Net skip blocks, in the backward pass.
    """
    if netG.startswith("resnet_"):
        n_blocks = {"resnet_9blocks": 9, "resnet_6blocks": 6}.get(netG)
        if n_blocks is None:
            raise ValueError(f"unknown netG {netG!r}; expected one of {GENERATORS}")
        return ResnetGenerator(output_nc, ngf, n_blocks, norm, use_dropout,
                               init_gain=init_gain, dtype=dtype, remat=remat,
                               init_type=init_type)
    num_downs = {"unet_128": 7, "unet_256": 8}.get(netG)
    if num_downs is None:
        raise ValueError(f"unknown netG {netG!r}; expected one of {GENERATORS}")
    return UnetGenerator(output_nc, num_downs, ngf, norm, use_dropout, init_gain, dtype,
                         init_type=init_type, remat=remat)


def define_D(
    netD: str, ndf: int, n_layers_D: int, norm: str, init_gain: float = 0.02,
    dtype: Any = None, init_type: str = "normal",
) -> nn.Module:
    """The discriminator the reference's `define_D(netD=..., init_type=...)` builds."""
    if netD == "basic":
        return NLayerDiscriminator(ndf, 3, norm, init_gain, dtype, init_type)
    if netD == "n_layers":
        return NLayerDiscriminator(ndf, n_layers_D, norm, init_gain, dtype, init_type)
    if netD == "pixel":
        return PixelDiscriminator(ndf, norm, init_gain, dtype, init_type)
    raise ValueError(f"unknown netD {netD!r}; expected one of {DISCRIMINATORS}")


def discriminator_output_size(netD: str, n_layers_D: int, size: int) -> int:
    """Side of the discriminator's logit map for a `size` input (0 means the input is too small)."""
    if netD == "pixel":
        return size
    layers_ = 3 if netD == "basic" else n_layers_D
    for _ in range(layers_):  # k4 s2 p1 convs: the first and n_layers - 1 more
        size = (size + 2 - 4) // 2 + 1
    for _ in range(2):  # two k4 s1 p1 convs
        size = size + 2 - 4 + 1
    return max(size, 0)

