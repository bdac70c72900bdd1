"""PyTorch re-expression of the CycleGAN reference (junyanz/pytorch-CycleGAN-and-pix2pix).

This is an independent re-expression written from the facts collected in
``shared/reference/cyclegan.md`` (sections 1-3 and 9), not a copy of the reference
code. It exists for the parity tests and the benchmark only: it lives in the optional
``unpaired.torch_reference`` subpackage (needs the ``test`` extra, i.e. torch), and
nothing else in ``unpaired`` imports it except the benchmark's torch modes, lazily.

What "parity" means here:

* Module order and ``state_dict`` names match the reference exactly (``model.N...``,
  ``model.N.conv_block.M...``, nested ``model.model.1.model.3...`` for the U-Net,
  ``net.N`` for the pixel discriminator), so reference checkpoints load with
  ``load_state_dict(strict=True)`` and our weight converter can be tested against it.
* Forward numerics match the reference, including its in-place activations. The only
  place where in-place matters is the U-Net: a non-outermost block starts with an
  in-place LeakyReLU, which overwrites the block input before it is concatenated, so
  the skip half of the concat is ``leaky_relu(x, 0.2)``, not ``x``.
* One CycleGAN training step (``CycleGANReference.optimize_parameters``) follows the
  reference order, losses, optimisers and the current-master (2a7afba) learning-rate
  schedule. Randomness that a JAX port cannot reproduce (the image pool's draws) can
  be injected so the two implementations can be compared step by step.

Everything works in float32 and float64: call ``.double()`` on the networks and pass
float64 inputs.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
import torch
from torch import nn

__all__ = [
    "Identity",
    "get_norm_layer",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetSkipConnectionBlock",
    "UnetGenerator",
    "NLayerDiscriminator",
    "PixelDiscriminator",
    "define_G",
    "define_D",
    "init_weights",
    "GANLoss",
    "cal_gradient_penalty",
    "ImagePool",
    "CycleGANReference",
]

NormLayerFactory = Callable[[int], nn.Module]


# --------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------


class Identity(nn.Module):
    """Pass-through used for ``norm='none'``; it still occupies a Sequential index."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _no_norm(num_features: int) -> nn.Module:
    del num_features
    return Identity()


def get_norm_layer(norm: str) -> NormLayerFactory:
    """Return a factory ``f(num_features) -> nn.Module`` for the named normalisation.

    * ``'instance'``: ``InstanceNorm2d(affine=False, track_running_stats=False)`` -- no
      learnable parameters and no running statistics (per-sample statistics in train
      and eval mode, biased variance, eps 1e-5).
    * ``'batch'``: ``BatchNorm2d(affine=True, track_running_stats=True)``.
    * ``'none'``: an ``Identity`` module, so Sequential indices do not shift.

    The companion bias rule is ``use_bias = norm == 'instance'`` (see ``_use_bias``):
    a convolution followed by a norm layer has a bias only under instance norm.
    """
    if norm == "instance":
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    if norm == "batch":
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    if norm == "none":
        return _no_norm
    raise NotImplementedError(f"normalization layer [{norm}] is not found")


def _use_bias(norm: str) -> bool:
    """The reference bias rule: convs before a norm have a bias only under InstanceNorm."""
    get_norm_layer(norm)  # validate the name
    return norm == "instance"


# --------------------------------------------------------------------------------------
# ResNet generator
# --------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """Residual block: ``x + conv_block(x)`` with no activation after the addition.

    ``conv_block`` (Sequential) for ``padding_type='reflect'`` without dropout:
    ``0 ReflectionPad2d(1), 1 Conv3x3, 2 norm, 3 ReLU, 4 ReflectionPad2d(1), 5 Conv3x3,
    6 norm``. ``'replicate'`` uses ReplicationPad2d(1) instead; ``'zero'`` adds no pad
    module and gives the convs ``padding=1``, so every later index shifts down. With
    ``use_dropout`` a ``Dropout(0.5)`` follows the first ReLU and shifts the rest up by 1.
    """

    def __init__(
        self,
        dim: int,
        padding_type: str,
        norm_layer: NormLayerFactory,
        use_dropout: bool,
        use_bias: bool,
    ) -> None:
        super().__init__()
        self.conv_block = self._build_conv_block(dim, padding_type, norm_layer, use_dropout, use_bias)

    @staticmethod
    def _pad(padding_type: str) -> tuple[list[nn.Module], int]:
        """Explicit pad module(s) and the conv's own zero padding for ``padding_type``."""
        if padding_type == "reflect":
            return [nn.ReflectionPad2d(1)], 0
        if padding_type == "replicate":
            return [nn.ReplicationPad2d(1)], 0
        if padding_type == "zero":
            return [], 1
        raise NotImplementedError(f"padding [{padding_type}] is not implemented")

    def _build_conv_block(
        self,
        dim: int,
        padding_type: str,
        norm_layer: NormLayerFactory,
        use_dropout: bool,
        use_bias: bool,
    ) -> nn.Sequential:
        layers: list[nn.Module] = []
        pad, p = self._pad(padding_type)
        layers += pad
        layers += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            layers += [nn.Dropout(0.5)]
        pad, p = self._pad(padding_type)
        layers += pad
        layers += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """ResNet generator: c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual
    blocks, two stride-2 transposed convs (p=1, output_padding=1), c7s1-out, Tanh.

    ``self.model`` indices (9 blocks): 0 ReflectionPad(3), 1 Conv7, 2 norm, 3 ReLU,
    4 Conv3/s2, 5-6, 7 Conv3/s2, 8-9, 10..18 blocks, 19 ConvT, 20-21, 22 ConvT, 23-24,
    25 ReflectionPad(3), 26 Conv7 (bias always), 27 Tanh. In general the ConvTs sit at
    ``10+n`` and ``13+n`` and the final conv at ``17+n``. The outer pads are always
    reflection pads; ``padding_type`` applies only inside the residual blocks.
    H and W must be divisible by 4 for the output to keep the input size.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
        n_blocks: int = 6,
        padding_type: str = "reflect",
    ) -> None:
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = _use_bias(norm)

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            mult = 2**i
            layers += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                norm_layer(ngf * mult * 2),
                nn.ReLU(True),
            ]
        mult = 2**n_downsampling
        for _ in range(n_blocks):
            layers += [ResnetBlock(ngf * mult, padding_type, norm_layer, use_dropout, use_bias)]
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(
                    ngf * mult,
                    ngf * mult // 2,
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                    bias=use_bias,
                ),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0),  # bias=True always
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --------------------------------------------------------------------------------------
# U-Net generator
# --------------------------------------------------------------------------------------


class UnetSkipConnectionBlock(nn.Module):
    """One level of the recursive U-Net; ``self.model`` is a Sequential.

    * outermost: ``[Conv4/s2(input_nc->inner), sub, ReLU, ConvT4/s2(2*inner->outer, bias),
      Tanh]``; returns ``model(x)``.
    * innermost: ``[LReLU(.2), Conv4/s2(input_nc->inner), ReLU, ConvT4/s2(inner->outer),
      norm(outer)]``.
    * middle: ``[LReLU(.2), Conv4/s2, norm(inner), sub, ReLU, ConvT4/s2(2*inner->outer),
      norm(outer)]`` plus ``Dropout(0.5)`` when ``use_dropout``.

    Non-outermost blocks return ``cat([x, model(x)], 1)``. Like the reference, the
    activations are in-place, so the leading LeakyReLU overwrites ``x`` before the
    concat: the skip half of the output is ``leaky_relu(x, 0.2)``.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        norm_layer = get_norm_layer(norm)
        use_bias = _use_bias(norm)
        if input_nc is None:
            input_nc = outer_nc

        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)

        layers: list[nn.Module]
        if outermost:
            if submodule is None:
                raise ValueError("the outermost block needs a submodule")
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, norm_layer(outer_nc)]
        else:
            if submodule is None:
                raise ValueError("a middle block needs a submodule")
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, norm_layer(inner_nc), submodule, uprelu, upconv, norm_layer(outer_nc)]
            if use_dropout:
                layers += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # The list is built left to right, but ``x`` is mutated in place by the first
        # (in-place) LeakyReLU inside ``self.model`` before ``cat`` reads it.
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net generator built from the innermost block outwards.

    ``num_downs`` stride-2 levels (7 for unet_128, 8 for unet_256), so H and W must be
    divisible by ``2**num_downs``. Levels: innermost ngf*8, ``num_downs-5`` middle ngf*8
    levels (the ones that get Dropout(0.5) when ``use_dropout``), then ngf*4, ngf*2,
    ngf and the outermost level. ``self.model`` is the outermost block, hence the
    nested ``model.model.1.model.3...`` state_dict keys.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (``basic`` = ``n_layers=3``, the 70x70 PatchGAN).

    k4, zero padding 1, LeakyReLU(0.2). ``self.model`` for n_layers=3: 0 Conv/s2 (bias),
    1 LReLU, 2 Conv/s2, 3 norm, 4 LReLU, 5 Conv/s2, 6 norm, 7 LReLU, 8 Conv/s1, 9 norm,
    10 LReLU, 11 Conv/s1 -> 1 channel (bias). Outputs raw logits (30x30 for 256x256).
    Channel multiplier is ``min(2**n, 8)``.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = _use_bias(norm)
        kw, padw = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
            norm_layer(ndf * nf_mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PixelDiscriminator(nn.Module):
    """1x1 PixelGAN discriminator: ``net = [Conv1x1(in->ndf, bias), LReLU(.2),
    Conv1x1(ndf->2ndf, bias=use_bias), norm, LReLU(.2), Conv1x1(2ndf->1, bias=use_bias)]``.
    """

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "instance") -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = _use_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1, stride=1, padding=0),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, stride=1, padding=0, bias=use_bias),
            norm_layer(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, stride=1, padding=0, bias=use_bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------------------
# Factories and initialisation
# --------------------------------------------------------------------------------------


def define_G(
    input_nc: int,
    output_nc: int,
    ngf: int = 64,
    netG: str = "resnet_9blocks",
    norm: str = "instance",
    use_dropout: bool = False,
) -> nn.Module:
    """Build a generator by its reference name (no weight initialisation, no device move).

    ``netG`` is one of ``resnet_9blocks``, ``resnet_6blocks``, ``unet_128`` (7 downs),
    ``unet_256`` (8 downs). Defaults are the CycleGAN training defaults (instance norm,
    no dropout); call ``init_weights`` afterwards to get the reference initialisation.
    """
    if netG == "resnet_9blocks":
        return ResnetGenerator(input_nc, output_nc, ngf, norm=norm, use_dropout=use_dropout, n_blocks=9)
    if netG == "resnet_6blocks":
        return ResnetGenerator(input_nc, output_nc, ngf, norm=norm, use_dropout=use_dropout, n_blocks=6)
    if netG == "unet_128":
        return UnetGenerator(input_nc, output_nc, 7, ngf, norm=norm, use_dropout=use_dropout)
    if netG == "unet_256":
        return UnetGenerator(input_nc, output_nc, 8, ngf, norm=norm, use_dropout=use_dropout)
    raise NotImplementedError(f"Generator model name [{netG}] is not recognized")


def define_D(
    input_nc: int,
    ndf: int = 64,
    netD: str = "basic",
    n_layers_D: int = 3,
    norm: str = "instance",
) -> nn.Module:
    """Build a discriminator by its reference name (no weight initialisation).

    ``netD`` is ``basic`` (3-layer PatchGAN), ``n_layers`` (``n_layers_D`` layers) or
    ``pixel`` (1x1 PixelGAN).
    """
    if netD == "basic":
        return NLayerDiscriminator(input_nc, ndf, n_layers=3, norm=norm)
    if netD == "n_layers":
        return NLayerDiscriminator(input_nc, ndf, n_layers=n_layers_D, norm=norm)
    if netD == "pixel":
        return PixelDiscriminator(input_nc, ndf, norm=norm)
    raise NotImplementedError(f"Discriminator model name [{netD}] is not recognized")


def init_weights(
    net: nn.Module, init_gain: float = 0.02, generator: torch.Generator | None = None,
    init_type: str = "normal",
) -> nn.Module:
    """Reference ``init_weights(net, init_type, init_gain)``, in place; returns ``net``.

    Every module whose class name contains ``Conv`` or ``Linear`` (ConvTranspose2d
    included) gets its weight from ``init_type`` -- normal: ``N(0, init_gain)``; xavier:
    ``xavier_normal_(gain=init_gain)``; kaiming: ``kaiming_normal_(a=0, mode='fan_in')``;
    orthogonal: ``orthogonal_(gain=init_gain)`` -- and ``bias = 0``; every module whose
    class name contains ``BatchNorm2d`` gets ``weight ~ N(1, init_gain)`` and ``bias = 0``
    whatever the type. Modules are visited in ``nn.Module.apply`` order (children before
    parents), as the reference does. Pass a seeded ``torch.Generator`` for determinism
    (the reference itself never seeds).
    """
    rules = {
        "normal": lambda w: nn.init.normal_(w, 0.0, init_gain, generator=generator),
        "xavier": lambda w: nn.init.xavier_normal_(w, gain=init_gain, generator=generator),
        "kaiming": lambda w: nn.init.kaiming_normal_(w, a=0, mode="fan_in", generator=generator),
        "orthogonal": lambda w: nn.init.orthogonal_(w, gain=init_gain, generator=generator),
    }
    if init_type not in rules:
        raise ValueError(f"unknown init_type {init_type!r}; expected one of {sorted(rules)}")

    def init_fn(m: nn.Module) -> None:
        classname = m.__class__.__name__
        weight = getattr(m, "weight", None)
        bias = getattr(m, "bias", None)
        if weight is not None and ("Conv" in classname or "Linear" in classname):
            rules[init_type](weight)
            if bias is not None:
                nn.init.constant_(bias, 0.0)
        elif "BatchNorm2d" in classname:
            nn.init.normal_(weight, 1.0, init_gain, generator=generator)
            nn.init.constant_(bias, 0.0)

    net.apply(init_fn)
    return net


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


class GANLoss(nn.Module):
    """Adversarial loss on raw discriminator logits.

    * ``lsgan`` (CycleGAN default): ``MSELoss`` (mean) against a target of 1.0 (real) or
      0.0 (fake) expanded to the prediction's shape.
    * ``vanilla``: ``BCEWithLogitsLoss`` (mean) against the same targets.
    * ``wgangp``: ``-mean(pred)`` for real, ``+mean(pred)`` for fake (no penalty here).
    * ``hinge`` (not in the reference; an ``unpaired`` extra): for the discriminator,
      real -> ``mean(relu(1 - pred))`` and fake -> ``mean(relu(1 + pred))``; for the
      generator (``for_discriminator=False``, real target) -> ``-mean(pred)``.

    ``for_discriminator`` only matters for ``hinge``; the reference modes ignore it.
    Targets follow the prediction's dtype and device, so float64 works.
    """

    MODES = ("lsgan", "vanilla", "wgangp", "hinge")

    def __init__(self, gan_mode: str, target_real_label: float = 1.0, target_fake_label: float = 0.0) -> None:
        super().__init__()
        if gan_mode not in self.MODES:
            raise NotImplementedError(f"gan mode {gan_mode} not implemented")
        self.gan_mode = gan_mode
        self.real_label = float(target_real_label)
        self.fake_label = float(target_fake_label)
        self.loss: nn.Module | None
        if gan_mode == "lsgan":
            self.loss = nn.MSELoss()
        elif gan_mode == "vanilla":
            self.loss = nn.BCEWithLogitsLoss()
        else:
            self.loss = None

    def get_target_tensor(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """The scalar label expanded to ``prediction``'s shape (dtype/device follow it)."""
        label = self.real_label if target_is_real else self.fake_label
        return torch.tensor(label, dtype=prediction.dtype, device=prediction.device).expand_as(prediction)

    def forward(
        self, prediction: torch.Tensor, target_is_real: bool, for_discriminator: bool = True
    ) -> torch.Tensor:
        if self.gan_mode in ("lsgan", "vanilla"):
            assert self.loss is not None
            return self.loss(prediction, self.get_target_tensor(prediction, target_is_real))
        if self.gan_mode == "wgangp":
            return -prediction.mean() if target_is_real else prediction.mean()
        # hinge
        if for_discriminator:
            if target_is_real:
                return torch.relu(1.0 - prediction).mean()
            return torch.relu(1.0 + prediction).mean()
        if not target_is_real:
            raise ValueError("hinge generator loss is only defined for target_is_real=True")
        return -prediction.mean()


def cal_gradient_penalty(
    netD: nn.Module,
    real_data: torch.Tensor,
    fake_data: torch.Tensor,
    type: str = "mixed",  # noqa: A002 - the reference's argument name
    constant: float = 1.0,
    lambda_gp: float = 10.0,
    alpha: torch.Tensor | None = None,
) -> tuple[torch.Tensor | float, torch.Tensor | None]:
    """WGAN-GP gradient penalty as in the reference; returns ``(penalty, gradients)``.

    The penalty point is ``real_data`` (``type='real'``), ``fake_data`` (``'fake'``) or
    ``alpha*real + (1-alpha)*fake`` (``'mixed'``) with one ``alpha ~ U(0,1)`` per sample
    broadcast over C,H,W (pass ``alpha`` of shape ``(N,)`` or any shape with N elements
    to fix it). The gradients of ``netD(point)`` w.r.t. the point (``grad_outputs`` of
    ones, ``create_graph=True``) are flattened per sample and
    ``penalty = (((g + 1e-16).norm(2, dim=1) - constant) ** 2).mean() * lambda_gp``.
    With ``lambda_gp <= 0`` it returns ``(0.0, None)``. As in the reference, for
    ``'real'``/``'fake'`` the given tensor itself is marked ``requires_grad``.
    Note the reference CycleGAN never calls this.
    """
    if lambda_gp <= 0.0:
        return 0.0, None
    if type == "real":
        interpolates = real_data
    elif type == "fake":
        interpolates = fake_data
    elif type == "mixed":
        n = real_data.shape[0]
        if alpha is None:
            alpha = torch.rand(n, 1, device=real_data.device, dtype=real_data.dtype)
        alpha = alpha.to(device=real_data.device, dtype=real_data.dtype).reshape(n, 1)
        alpha = alpha.expand(n, real_data.nelement() // n).contiguous().view(*real_data.shape)
        interpolates = alpha * real_data + (1 - alpha) * fake_data
    else:
        raise NotImplementedError(f"{type} not implemented")
    interpolates.requires_grad_(True)
    disc_interpolates = netD(interpolates)
    gradients = torch.autograd.grad(
        outputs=disc_interpolates,
        inputs=interpolates,
        grad_outputs=torch.ones_like(disc_interpolates),
        create_graph=True,
        retain_graph=True,
        only_inputs=True,
    )[0]
    gradients = gradients.view(real_data.size(0), -1)
    penalty = (((gradients + 1e-16).norm(2, dim=1) - constant) ** 2).mean() * lambda_gp
    return penalty, gradients


# --------------------------------------------------------------------------------------
# Image pool
# --------------------------------------------------------------------------------------


class ImagePool:
    """History buffer of generated images (Shrivastava et al.), reference semantics.

    ``query(images)`` handles the batch one image at a time (each stored detached, as a
    ``1xCxHxW`` tensor):

    * ``pool_size == 0``: the batch is returned unchanged.
    * While the pool holds fewer than ``pool_size`` images: the image is appended and
      returned.
    * Once the pool is full: draw ``p ~ U(0, 1)``. If ``p > 0.5``, draw an index
      ``i`` in ``[0, pool_size - 1]``, return a clone of ``pool[i]`` and store the
      current image at ``i``. Otherwise return the current image (pool unchanged).

    The returned images are concatenated on dim 0.

    Injected randomness (for replaying against the JAX pool): ``draws`` is an iterable
    of ``(p, i)`` pairs. Exactly ONE pair is consumed per image, and ONLY for images
    processed while the pool is already full (images that go into a not-yet-full pool
    consume nothing). ``i`` is used only when ``p > 0.5`` and is ignored otherwise.
    ``iter(draws)`` is taken at the start of each call, so a list applies to that call
    only (starting from its first pair), whereas an iterator continues across calls.
    Unused pairs are left unconsumed; running out raises ``ValueError``.

    With ``draws=None`` Python's global ``random`` is used exactly as the reference
    does: ``random.uniform(0, 1)`` per image, then ``random.randint(0, pool_size - 1)``
    only when ``p > 0.5``.
    """

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self.num_imgs = 0
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, draws: Iterable[tuple[float, int]] | None = None) -> torch.Tensor:
        """Return a batch drawn from the history (see the class docstring for the rules)."""
        if self.pool_size == 0:
            return images
        draw_iter: Iterator[tuple[float, int]] | None = iter(draws) if draws is not None else None
        return_images = []
        for image in images:
            image = image.detach().unsqueeze(0)
            if self.num_imgs < self.pool_size:
                self.num_imgs += 1
                self.images.append(image)
                return_images.append(image)
                continue
            if draw_iter is None:
                p = random.uniform(0, 1)
                use_pool = p > 0.5
                idx = random.randint(0, self.pool_size - 1) if use_pool else -1
            else:
                try:
                    p, idx = next(draw_iter)
                except StopIteration:
                    raise ValueError("ImagePool.query ran out of injected (p, i) draws") from None
                use_pool = p > 0.5
                if use_pool and not 0 <= int(idx) < self.pool_size:
                    raise ValueError(f"pool index {idx} out of range [0, {self.pool_size - 1}]")
                idx = int(idx)
            if use_pool:
                tmp = self.images[idx].clone()
                self.images[idx] = image
                return_images.append(tmp)
            else:
                return_images.append(image)
        return torch.cat(return_images, 0)


# --------------------------------------------------------------------------------------
# CycleGAN training step
# --------------------------------------------------------------------------------------


def _set_requires_grad(nets: Sequence[nn.Module], requires_grad: bool) -> None:
    for net in nets:
        for param in net.parameters():
            param.requires_grad = requires_grad


class CycleGANReference:
    """The reference ``CycleGANModel`` training semantics, for parity tests and benchmarks.

    Naming follows the reference: ``G_A: A -> B``, ``G_B: B -> A``; ``D_A`` judges
    domain B (real_B vs fake_B = G_A(real_A)) and ``D_B`` judges domain A (real_A vs
    fake_A = G_B(real_B)). ``fake_B_pool`` holds fake_B images and feeds D_A;
    ``fake_A_pool`` holds fake_A images and feeds D_B.

    The networks must already be built and initialised (and ``.double()``-ed for
    float64 runs); this class never changes their train/eval mode.

    Optimisers: ``Adam(chain(G_A, G_B), lr, betas=(beta1, 0.999), eps=1e-8)`` and the
    same for (D_A, D_B). Learning rate: ``LambdaLR`` with
    ``f(e) = 1 - max(0, e + epoch_count - n_epochs) / (n_epochs_decay + 1)`` stepped by
    ``update_learning_rate()`` at the END of each epoch (current-master semantics), so
    epoch k (counting from ``epoch_count``) trains with
    ``lr * (1 - max(0, k - n_epochs) / (n_epochs_decay + 1))``.
    """

    LOSS_NAMES = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")

    def __init__(
        self,
        netG_A: nn.Module,
        netG_B: nn.Module,
        netD_A: nn.Module,
        netD_B: nn.Module,
        lr: float = 2e-4,
        beta1: float = 0.5,
        lambda_A: float = 10.0,
        lambda_B: float = 10.0,
        lambda_identity: float = 0.5,
        gan_mode: str = "lsgan",
        pool_size: int = 50,
        n_epochs: int = 100,
        n_epochs_decay: int = 100,
        epoch_count: int = 1,
    ) -> None:
        self.netG_A = netG_A
        self.netG_B = netG_B
        self.netD_A = netD_A
        self.netD_B = netD_B
        self.lambda_A = lambda_A
        self.lambda_B = lambda_B
        self.lambda_identity = lambda_identity
        self.n_epochs = n_epochs
        self.n_epochs_decay = n_epochs_decay
        self.epoch_count = epoch_count

        self.fake_A_pool = ImagePool(pool_size)
        self.fake_B_pool = ImagePool(pool_size)
        self.criterionGAN = GANLoss(gan_mode)
        self.criterionCycle = nn.L1Loss()
        self.criterionIdt = nn.L1Loss()

        self.optimizer_G = torch.optim.Adam(
            itertools.chain(netG_A.parameters(), netG_B.parameters()), lr=lr, betas=(beta1, 0.999)
        )
        self.optimizer_D = torch.optim.Adam(
            itertools.chain(netD_A.parameters(), netD_B.parameters()), lr=lr, betas=(beta1, 0.999)
        )
        self.optimizers = [self.optimizer_G, self.optimizer_D]
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=self.lr_lambda) for opt in self.optimizers]

    # -- schedule ---------------------------------------------------------------------

    def lr_lambda(self, epoch: int) -> float:
        """Linear-decay multiplier for scheduler step count ``epoch``."""
        return 1.0 - max(0, epoch + self.epoch_count - self.n_epochs) / float(self.n_epochs_decay + 1)

    @property
    def lr(self) -> float:
        """The learning rate the next step will use (both optimisers share it)."""
        return float(self.optimizer_G.param_groups[0]["lr"])

    def update_learning_rate(self) -> float:
        """Step both schedulers; call once at the END of each epoch. Returns the new lr."""
        for scheduler in self.schedulers:
            scheduler.step()
        return self.lr

    # -- losses -----------------------------------------------------------------------

    def forward(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reference ``forward``: fake_B, rec_A, fake_A, rec_B (in that call order)."""
        fake_B = self.netG_A(real_A)
        rec_A = self.netG_B(fake_B)
        fake_A = self.netG_B(real_B)
        rec_B = self.netG_A(fake_A)
        return {"fake_B": fake_B, "rec_A": rec_A, "fake_A": fake_A, "rec_B": rec_B}

    def _generator_terms(
        self, real_A: torch.Tensor, real_B: torch.Tensor, fakes: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reference ``backward_G`` loss (without the backward), given ``forward``'s outputs.

        Adds ``idt_A``/``idt_B`` images to ``fakes`` when the identity loss is on.
        """
        lambda_idt = self.lambda_identity
        if lambda_idt > 0:
            idt_A = self.netG_A(real_B)
            loss_idt_A = self.criterionIdt(idt_A, real_B) * self.lambda_B * lambda_idt
            idt_B = self.netG_B(real_A)
            loss_idt_B = self.criterionIdt(idt_B, real_A) * self.lambda_A * lambda_idt
            fakes["idt_A"], fakes["idt_B"] = idt_A, idt_B
        else:
            loss_idt_A = real_A.new_zeros(())
            loss_idt_B = real_A.new_zeros(())
        loss_G_A = self.criterionGAN(self.netD_A(fakes["fake_B"]), True, for_discriminator=False)
        loss_G_B = self.criterionGAN(self.netD_B(fakes["fake_A"]), True, for_discriminator=False)
        loss_cycle_A = self.criterionCycle(fakes["rec_A"], real_A) * self.lambda_A
        loss_cycle_B = self.criterionCycle(fakes["rec_B"], real_B) * self.lambda_B
        loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        terms = {
            "G_A": loss_G_A,
            "G_B": loss_G_B,
            "cycle_A": loss_cycle_A,
            "cycle_B": loss_cycle_B,
            "idt_A": loss_idt_A,
            "idt_B": loss_idt_B,
        }
        return loss_G, terms

    def generator_loss(
        self, real_A: torch.Tensor, real_B: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forward plus the full generator loss, without any backward or step.

        Returns ``(loss_G, terms, fakes)``: ``terms`` has G_A, G_B, cycle_A, cycle_B,
        idt_A, idt_B; ``fakes`` has fake_B, rec_A, fake_A, rec_B (and idt_A, idt_B when
        ``lambda_identity > 0``). The D parameters keep their ``requires_grad`` flags;
        freeze them yourself if D gradients must not accumulate.
        """
        fakes = self.forward(real_A, real_B)
        loss_G, terms = self._generator_terms(real_A, real_B, fakes)
        return loss_G, terms, fakes

    def _discriminator_basic(self, netD: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The reference ``backward_D_basic`` loss: 0.5 * (GAN(D(real), 1) + GAN(D(fake.detach()), 0))."""
        loss_real = self.criterionGAN(netD(real), True, for_discriminator=True)
        loss_fake = self.criterionGAN(netD(fake.detach()), False, for_discriminator=True)
        return (loss_real + loss_fake) * 0.5

    def discriminator_loss(
        self, real_A: torch.Tensor, real_B: torch.Tensor, fake_A: torch.Tensor, fake_B: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Both discriminator losses, without pool, backward or step.

        ``loss_D_A`` = D_A on real_B vs ``fake_B``; ``loss_D_B`` = D_B on real_A vs
        ``fake_A`` (fakes are detached). Pass pooled fakes to mirror a training step.
        Returns ``(loss_D_A + loss_D_B, {'D_A': ..., 'D_B': ...})``.
        """
        loss_D_A = self._discriminator_basic(self.netD_A, real_B, fake_B)
        loss_D_B = self._discriminator_basic(self.netD_B, real_A, fake_A)
        return loss_D_A + loss_D_B, {"D_A": loss_D_A, "D_B": loss_D_B}

    # -- one training iteration -------------------------------------------------------

    def optimize_parameters(
        self,
        real_A: torch.Tensor,
        real_B: torch.Tensor,
        pool_draws_A: Iterable[tuple[float, int]] | None = None,
        pool_draws_B: Iterable[tuple[float, int]] | None = None,
    ) -> dict[str, float]:
        """One reference training iteration; returns the losses as floats.

        Order: forward (pre-update G); G step with D frozen (``requires_grad=False``);
        D step with D unfrozen: ``fake_B_pool.query(fake_B)`` -> D_A backward, then
        ``fake_A_pool.query(fake_A)`` -> D_B backward, then one ``optimizer_D.step()``.
        ``pool_draws_A`` feeds ``fake_A_pool`` (D_B's pool) and ``pool_draws_B`` feeds
        ``fake_B_pool`` (D_A's pool); see ``ImagePool.query``. With ``None`` the global
        Python ``random`` is used, B's pool first, as in the reference.

        Keys: G_A, G_B, cycle_A, cycle_B, idt_A, idt_B, D_A, D_B and the total G.
        """
        discriminators = [self.netD_A, self.netD_B]
        fakes = self.forward(real_A, real_B)

        _set_requires_grad(discriminators, False)
        self.optimizer_G.zero_grad()
        loss_G, g_terms = self._generator_terms(real_A, real_B, fakes)
        loss_G.backward()
        self.optimizer_G.step()

        _set_requires_grad(discriminators, True)
        self.optimizer_D.zero_grad()
        fake_B = self.fake_B_pool.query(fakes["fake_B"], pool_draws_B)
        loss_D_A = self._discriminator_basic(self.netD_A, real_B, fake_B)
        loss_D_A.backward()
        fake_A = self.fake_A_pool.query(fakes["fake_A"], pool_draws_A)
        loss_D_B = self._discriminator_basic(self.netD_B, real_A, fake_A)
        loss_D_B.backward()
        self.optimizer_D.step()

        losses = {name: float(value.detach()) for name, value in g_terms.items()}
        losses["D_A"] = float(loss_D_A.detach())
        losses["D_B"] = float(loss_D_B.detach())
        losses["G"] = float(loss_G.detach())
        return losses
