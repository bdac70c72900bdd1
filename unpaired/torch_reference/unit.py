"""PyTorch re-expression of the UNIT reference (mingyuliutw/UNIT, branch master).

Written from the facts in ``shared/reference/unit.md`` (sections 1, 2 and 4), not copied.
For parity tests and the benchmark only (needs torch). Module layout and ``state_dict``
names are the reference's (``enc.model.0.conv.weight``, ``cnns.0.4.weight``, ...), so
files written from these modules have the official checkpoint's keys.

Randomness a JAX port cannot reproduce (the encoders' Gaussian noise) can be injected:
``UNITReference.dis_update`` / ``gen_update`` take the noise tensors they would draw.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import torch
from torch import nn
import torch.nn.functional as F


class LayerNorm(nn.Module):
    """The reference's LayerNorm: per-sample mean and unbiased std over (C, H, W),
    (x - mean) / (std + eps), then a per-channel gamma (U(0, 1) at construction) and beta."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        self.num_features, self.eps, self.affine = num_features, eps, affine
        if affine:
            self.gamma = nn.Parameter(torch.Tensor(num_features).uniform_())
            self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [-1] + [1] * (x.dim() - 1)
        flat = x.reshape(x.size(0), -1)
        mean = flat.mean(1).view(*shape)
        std = flat.std(1).view(*shape)
        x = (x - mean) / (std + self.eps)
        if self.affine:
            cshape = [1, -1] + [1] * (x.dim() - 2)
            x = x * self.gamma.view(*cshape) + self.beta.view(*cshape)
        return x


class Conv2dBlock(nn.Module):
    """pad -> conv (bias) -> norm -> activation; registered as pad, norm, activation, conv."""

    def __init__(self, in_dim: int, out_dim: int, k: int, s: int, p: int, norm: str = "none",
                 activation: str = "relu", pad_type: str = "zero"):
        super().__init__()
        pads = {"reflect": nn.ReflectionPad2d, "replicate": nn.ReplicationPad2d, "zero": nn.ZeroPad2d}
        self.pad = pads[pad_type](p)
        if norm == "in":
            self.norm = nn.InstanceNorm2d(out_dim)
        elif norm == "ln":
            self.norm = LayerNorm(out_dim)
        elif norm == "none":
            self.norm = None
        else:
            raise ValueError(f"unsupported norm {norm!r}")
        acts = {"relu": lambda: nn.ReLU(inplace=True), "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True),
                "tanh": nn.Tanh, "none": lambda: None}
        self.activation = acts[activation]()
        self.conv = nn.Conv2d(in_dim, out_dim, k, s, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.pad(x))
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class ResBlock(nn.Module):
    """x + [Conv2dBlock(3, norm, activ) -> Conv2dBlock(3, norm, none)](x)."""

    def __init__(self, dim: int, norm: str = "in", activation: str = "relu", pad_type: str = "zero"):
        super().__init__()
        self.model = nn.Sequential(
            Conv2dBlock(dim, dim, 3, 1, 1, norm, activation, pad_type),
            Conv2dBlock(dim, dim, 3, 1, 1, norm, "none", pad_type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.model(x)


class ResBlocks(nn.Module):
    def __init__(self, n: int, dim: int, norm: str = "in", activation: str = "relu",
                 pad_type: str = "zero"):
        super().__init__()
        self.model = nn.Sequential(*[ResBlock(dim, norm, activation, pad_type) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ContentEncoder(nn.Module):
    def __init__(self, n_downsample: int, n_res: int, input_dim: int, dim: int, norm: str,
                 activ: str, pad_type: str):
        super().__init__()
        layers = [Conv2dBlock(input_dim, dim, 7, 1, 3, norm, activ, pad_type)]
        for _ in range(n_downsample):
            layers.append(Conv2dBlock(dim, 2 * dim, 4, 2, 1, norm, activ, pad_type))
            dim *= 2
        layers.append(ResBlocks(n_res, dim, norm, activ, pad_type))
        self.model = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Decoder(nn.Module):
    def __init__(self, n_upsample: int, n_res: int, dim: int, output_dim: int, res_norm: str,
                 activ: str, pad_type: str):
        super().__init__()
        layers: list[nn.Module] = [ResBlocks(n_res, dim, res_norm, activ, pad_type)]
        for _ in range(n_upsample):
            layers += [nn.Upsample(scale_factor=2),
                       Conv2dBlock(dim, dim // 2, 5, 1, 2, "ln", activ, pad_type)]
            dim //= 2
        layers.append(Conv2dBlock(dim, output_dim, 7, 1, 3, "none", "tanh", pad_type))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class VAEGen(nn.Module):
    """enc (ContentEncoder, IN) + dec (Decoder, res_norm 'in'); encode returns (h, noise)."""

    def __init__(self, input_dim: int, dim: int = 64, n_downsample: int = 2, n_res: int = 4,
                 activ: str = "relu", pad_type: str = "reflect"):
        super().__init__()
        self.enc = ContentEncoder(n_downsample, n_res, input_dim, dim, "in", activ, pad_type)
        self.dec = Decoder(n_downsample, n_res, self.enc.output_dim, input_dim, "in", activ, pad_type)

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        h = self.enc(x)
        return h, (torch.randn_like(h) if noise is None else noise)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)


class MsImageDis(nn.Module):
    """Multi-scale LSGAN discriminator: one conv stack per scale, avg-pool between scales."""

    def __init__(self, input_dim: int, dim: int = 64, n_layer: int = 4, num_scales: int = 3,
                 norm: str = "none", activ: str = "lrelu", pad_type: str = "reflect"):
        super().__init__()
        self.downsample = nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)
        self.cnns = nn.ModuleList()
        for _ in range(num_scales):
            d = dim
            layers = [Conv2dBlock(input_dim, d, 4, 2, 1, "none", activ, pad_type)]
            for _ in range(n_layer - 1):
                layers.append(Conv2dBlock(d, 2 * d, 4, 2, 1, norm, activ, pad_type))
                d *= 2
            layers.append(nn.Conv2d(d, 1, 1, 1, 0))
            self.cnns.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for cnn in self.cnns:
            outs.append(cnn(x))
            x = self.downsample(x)
        return outs

    def calc_dis_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        loss = 0
        for o0, o1 in zip(self.forward(fake), self.forward(real)):
            loss = loss + torch.mean(o0 ** 2) + torch.mean((o1 - 1) ** 2)
        return loss

    def calc_gen_loss(self, fake: torch.Tensor) -> torch.Tensor:
        loss = 0
        for o in self.forward(fake):
            loss = loss + torch.mean((o - 1) ** 2)
        return loss


def weights_init(net: nn.Module, kind: str, gen: torch.Generator | None = None) -> nn.Module:
    """`weights_init('kaiming'|'gaussian')`: Conv*/Linear weights, biases 0; LN untouched."""
    for m in net.modules():
        name = type(m).__name__
        if name.startswith(("Conv", "Linear")) and hasattr(m, "weight"):
            with torch.no_grad():
                if kind == "gaussian":
                    m.weight.normal_(0.0, 0.02, generator=gen)
                elif kind == "kaiming":
                    fan_in = m.weight[0].numel()
                    m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                else:
                    raise ValueError(kind)
                if m.bias is not None:
                    m.bias.zero_()
    return net


def build_unit(input_dim_a: int = 3, input_dim_b: int = 3, dim: int = 64, n_downsample: int = 2,
               n_res: int = 4, dis_dim: int = 64, n_layer: int = 4, num_scales: int = 3,
               pad_type: str = "reflect", seed: int = 0) -> dict[str, nn.Module]:
    """gen_a, gen_b (kaiming) and dis_a, dis_b (N(0, 0.02)) as the trainer builds them."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    nets = {
        "gen_a": VAEGen(input_dim_a, dim, n_downsample, n_res, "relu", pad_type),
        "gen_b": VAEGen(input_dim_b, dim, n_downsample, n_res, "relu", pad_type),
        "dis_a": MsImageDis(input_dim_a, dis_dim, n_layer, num_scales, "none", "lrelu", pad_type),
        "dis_b": MsImageDis(input_dim_b, dis_dim, n_layer, num_scales, "none", "lrelu", pad_type),
    }
    for name in ("gen_a", "gen_b"):
        weights_init(nets[name], "kaiming", gen)
    for name in ("dis_a", "dis_b"):
        weights_init(nets[name], "gaussian", gen)
    return nets


def build_unit_master(config) -> dict[str, nn.Module]:
    """`build_unit` from a UNIT config's gen_*/dis_* keys; the master reference has no shared
    layers, so a config with gen_shared_blocks or dis_shared_layers is NotImplementedError."""
    if config.get("gen_shared_blocks", 0) or config.get("dis_shared_layers", 0):
        raise NotImplementedError("the UNIT master reference has no shared layers: set "
                                  "config.gen_shared_blocks=0 and config.dis_shared_layers=0")
    return build_unit(config.input_dim_a, config.input_dim_b, config.gen_dim,
                      config.gen_n_downsample, config.gen_n_res, config.dis_dim,
                      config.dis_n_layer, config.dis_num_scales, config.gen_pad_type)


def recon_criterion(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.abs(x - y))


def compute_kl(mu: torch.Tensor) -> torch.Tensor:
    return torch.mean(mu ** 2)


class AdamUpdates:
    """`dis_update` / `gen_update`: one step of `dis_opt` / `gen_opt` on `dis_loss` / `gen_loss`,
    as both UNIT trainers (master and version_02) take them."""

    def dis_update(self, x_a, x_b, noise=None):
        self.dis_opt.zero_grad()
        total, terms = self.dis_loss(x_a, x_b, noise)
        total.backward()
        self.dis_opt.step()
        return total, terms

    def gen_update(self, x_a, x_b, noise=None):
        self.gen_opt.zero_grad()
        total, terms, _ = self.gen_loss(x_a, x_b, noise)
        total.backward()
        self.gen_opt.step()
        return total, terms


class UNITReference(AdamUpdates):
    """`UNIT_Trainer` (master), with the VGG loss when hp['vgg_w'] > 0: two Adams with
    coupled weight decay, StepLR,
    `update_learning_rate` then `dis_update` then `gen_update` per iteration."""

    def __init__(self, nets: Mapping[str, nn.Module], hp: Mapping[str, float],
                 vgg: nn.Module | None = None):
        self.vgg = vgg  # frozen Vgg16 (torch_reference.vgg), used when hp['vgg_w'] > 0
        self.gen_a, self.gen_b = nets["gen_a"], nets["gen_b"]
        self.dis_a, self.dis_b = nets["dis_a"], nets["dis_b"]
        self.hp = dict(hp)
        betas = (hp["beta1"], hp["beta2"])
        dis_params = list(self.dis_a.parameters()) + list(self.dis_b.parameters())
        gen_params = list(self.gen_a.parameters()) + list(self.gen_b.parameters())
        self.dis_opt = torch.optim.Adam(dis_params, lr=hp["lr"], betas=betas,
                                        weight_decay=hp["weight_decay"])
        self.gen_opt = torch.optim.Adam(gen_params, lr=hp["lr"], betas=betas,
                                        weight_decay=hp["weight_decay"])
        self.dis_sched = torch.optim.lr_scheduler.StepLR(self.dis_opt, hp["step_size"], hp["gamma"])
        self.gen_sched = torch.optim.lr_scheduler.StepLR(self.gen_opt, hp["step_size"], hp["gamma"])

    def update_learning_rate(self) -> None:
        """Steps both StepLRs *before* the updates, as the reference's train.py does."""
        with warnings.catch_warnings():  # torch warns about exactly this order
            warnings.simplefilter("ignore", UserWarning)
            self.dis_sched.step()
            self.gen_sched.step()

    def dis_loss(self, x_a, x_b, noise=None):
        """(total, terms) of `dis_update`; noise = {'n_a', 'n_b'} or drawn."""
        noise = noise or {}
        h_a, n_a = self.gen_a.encode(x_a, noise.get("n_a"))
        h_b, n_b = self.gen_b.encode(x_b, noise.get("n_b"))
        x_ba = self.gen_a.decode(h_b + n_b)
        x_ab = self.gen_b.decode(h_a + n_a)
        terms = {"dis_a": self.dis_a.calc_dis_loss(x_ba.detach(), x_a),
                 "dis_b": self.dis_b.calc_dis_loss(x_ab.detach(), x_b)}
        total = self.hp["gan_w"] * terms["dis_a"] + self.hp["gan_w"] * terms["dis_b"]
        return total, terms

    def gen_loss(self, x_a, x_b, noise=None):
        """(total, terms, images) of `gen_update`; noise = {'n_a','n_b','n_a_recon','n_b_recon'}."""
        noise = noise or {}
        hp = self.hp
        h_a, n_a = self.gen_a.encode(x_a, noise.get("n_a"))
        h_b, n_b = self.gen_b.encode(x_b, noise.get("n_b"))
        x_a_recon = self.gen_a.decode(h_a + n_a)
        x_b_recon = self.gen_b.decode(h_b + n_b)
        x_ba = self.gen_a.decode(h_b + n_b)
        x_ab = self.gen_b.decode(h_a + n_a)
        h_b_recon, n_b_recon = self.gen_a.encode(x_ba, noise.get("n_b_recon"))
        h_a_recon, n_a_recon = self.gen_b.encode(x_ab, noise.get("n_a_recon"))
        x_aba = self.gen_a.decode(h_a_recon + n_a_recon)
        x_bab = self.gen_b.decode(h_b_recon + n_b_recon)
        t = {
            "recon_x_a": recon_criterion(x_a_recon, x_a),
            "recon_x_b": recon_criterion(x_b_recon, x_b),
            "recon_kl_a": compute_kl(h_a),
            "recon_kl_b": compute_kl(h_b),
            "cyc_x_a": recon_criterion(x_aba, x_a),
            "cyc_x_b": recon_criterion(x_bab, x_b),
            "recon_kl_cyc_aba": compute_kl(h_a_recon),
            "recon_kl_cyc_bab": compute_kl(h_b_recon),
            "adv_a": self.dis_a.calc_gen_loss(x_ba),
            "adv_b": self.dis_b.calc_gen_loss(x_ab),
        }
        total = (hp["gan_w"] * t["adv_a"] + hp["gan_w"] * t["adv_b"]
                 + hp["recon_x_w"] * t["recon_x_a"] + hp["recon_kl_w"] * t["recon_kl_a"]
                 + hp["recon_x_w"] * t["recon_x_b"] + hp["recon_kl_w"] * t["recon_kl_b"]
                 + hp["recon_x_cyc_w"] * t["cyc_x_a"] + hp["recon_kl_cyc_w"] * t["recon_kl_cyc_aba"]
                 + hp["recon_x_cyc_w"] * t["cyc_x_b"] + hp["recon_kl_cyc_w"] * t["recon_kl_cyc_bab"])
        if hp.get("vgg_w", 0) > 0:
            from unpaired.torch_reference.vgg import compute_vgg_loss
            t["vgg_a"] = compute_vgg_loss(self.vgg, x_ba, x_b)
            t["vgg_b"] = compute_vgg_loss(self.vgg, x_ab, x_a)
            total = total + hp["vgg_w"] * t["vgg_a"] + hp["vgg_w"] * t["vgg_b"]
        images = {"x_ab": x_ab, "x_ba": x_ba, "x_a_recon": x_a_recon, "x_b_recon": x_b_recon}
        return total, t, images

    def step(self, x_a, x_b, dis_noise=None, gen_noise=None):
        """One iteration of master's train.py: lr step, D update, G update (same pair)."""
        self.update_learning_rate()
        d = self.dis_update(x_a, x_b, dis_noise)
        g = self.gen_update(x_a, x_b, gen_noise)
        return d, g

    def translate(self, x: torch.Tensor, a2b: bool = True) -> torch.Tensor:
        """test.py: encode, decode the mean h (no noise)."""
        enc, dec = (self.gen_a, self.gen_b) if a2b else (self.gen_b, self.gen_a)
        h, _ = enc.encode(x)
        return dec.decode(h)
