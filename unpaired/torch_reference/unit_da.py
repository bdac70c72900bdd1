"""PyTorch re-expression of UNIT's digit domain-adaptation model (version_02).

`CoVAE32x32`, `CoDis32x32` and `COCOGANDAContextTrainer`'s updates, written from the facts
in `shared/reference/unit.md` §3.2 with the reference's module names, so that a version_02
state_dict maps one to one onto ours. For parity the random draws can be injected: the VAE
noise (`eps`, NCHW) and the discriminator's dropout keep masks (four per trunk pass).
Imported only by tests and the benchmark (needs torch).
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DROPOUT_RATES = (0.1, 0.3, 0.5, 0.5)


class Bias2d(nn.Module):
    """A per-channel learned bias (N(0, 0.002) at init)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.empty(channels).normal_(0, 0.002))

    def forward(self, x):
        return x + self.bias.view(1, -1, 1, 1)


def _bnns(conv: nn.Module, n_out: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(n_out, affine=False), Bias2d(n_out),
                         nn.LeakyReLU(0.01))


class LeakyReLUBNNSConv2d(nn.Module):
    """conv (bias) -> BatchNorm2d(affine=False) -> Bias2d -> LeakyReLU(0.01), as `.model`."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int, stride: int, padding: int = 0):
        super().__init__()
        self.model = _bnns(nn.Conv2d(n_in, n_out, kernel_size, stride, padding), n_out)

    def forward(self, x):
        return self.model(x)


class LeakyReLUBNNSConvTranspose2d(nn.Module):
    """The transposed-conv form of `LeakyReLUBNNSConv2d`."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int, stride: int, padding: int = 0):
        super().__init__()
        self.model = _bnns(nn.ConvTranspose2d(n_in, n_out, kernel_size, stride, padding), n_out)

    def forward(self, x):
        return self.model(x)


class GaussianVAE2D(nn.Module):
    """1x1 convs for mu and (softplus) sd; `sample` draws z = mu + sd * eps."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.en_mu = nn.Conv2d(n_in, n_out, 1, 1, 0)
        self.en_sigma = nn.Conv2d(n_in, n_out, 1, 1, 0)

    def forward(self, x):
        return self.en_mu(x), F.softplus(self.en_sigma(x))

    def sample(self, x, eps=None):
        mu, sd = self.forward(x)
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + sd * eps, mu, sd


class CoVAE32x32(nn.Module):
    """The coupled generator; inputs carry 2 xy channels; returns x_aa, x_ba, x_ab, x_bb, (mu, sd)."""

    def __init__(self, ch: int = 32, input_dim_a: int = 3, output_dim_a: int = 3,
                 input_dim_b: int = 1, output_dim_b: int = 1):
        super().__init__()
        self.g_en_conv0_a = LeakyReLUBNNSConv2d(input_dim_a, ch, 5, 2, 2)
        self.g_en_conv0_b = LeakyReLUBNNSConv2d(input_dim_b, ch, 5, 2, 2)
        self.g_en_conv1 = LeakyReLUBNNSConv2d(ch, ch * 2, 5, 2, 2)
        self.g_en_conv2 = LeakyReLUBNNSConv2d(ch * 2, ch * 4, 8, 1, 0)
        self.g_en_conv3 = LeakyReLUBNNSConv2d(ch * 4, ch * 8, 1, 1, 0)
        self.g_vae = GaussianVAE2D(ch * 8, ch * 8)
        self.g_de_conv0 = LeakyReLUBNNSConvTranspose2d(ch * 8, ch * 8, 4, 2, 0)
        self.g_de_conv1 = LeakyReLUBNNSConvTranspose2d(ch * 8, ch * 4, 4, 2, 1)
        self.g_de_conv2 = LeakyReLUBNNSConvTranspose2d(ch * 4, ch * 2, 4, 2, 1)
        self.g_de_conv3_a = LeakyReLUBNNSConvTranspose2d(ch * 2, ch, 4, 2, 1)
        self.g_de_conv3_b = LeakyReLUBNNSConvTranspose2d(ch * 2, ch, 4, 2, 1)
        self.de_conv4_a = nn.ConvTranspose2d(ch, output_dim_a, 1, 1, 0)
        self.de_conv4_b = nn.ConvTranspose2d(ch, output_dim_b, 1, 1, 0)

    def forward(self, x_a, x_b, eps=None):
        h = torch.cat((self.g_en_conv0_a(x_a), self.g_en_conv0_b(x_b)), 0)
        h = self.g_en_conv3(self.g_en_conv2(self.g_en_conv1(h)))
        z, mu, sd = self.g_vae.sample(h, eps)
        d = self.g_de_conv2(self.g_de_conv1(self.g_de_conv0(z)))
        out_a = torch.tanh(self.de_conv4_a(self.g_de_conv3_a(d)))
        out_b = torch.tanh(self.de_conv4_b(self.g_de_conv3_b(d)))
        n = x_a.size(0)
        return out_a[:n], out_a[n:], out_b[:n], out_b[n:], [(mu, sd)]

    def translate_a2b(self, x_a):
        """x_a (with xy) -> B through mu, no noise (the module's current BN mode)."""
        mu, _ = self.g_vae(self.g_en_conv3(self.g_en_conv2(self.g_en_conv1(self.g_en_conv0_a(x_a)))))
        d = self.g_de_conv2(self.g_de_conv1(self.g_de_conv0(mu)))
        return torch.tanh(self.de_conv4_b(self.g_de_conv3_b(d)))


def _conv_relu_pool(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(n_in, n_out, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2))


class CoDis32x32(nn.Module):
    """The coupled discriminator; `keep`: four dropout keep masks (NCHW), or None for
    F.dropout (p 0.1, 0.3, 0.5, 0.5) in train mode."""

    def __init__(self, ch: int = 64, input_dim_a: int = 3, input_dim_b: int = 1):
        super().__init__()
        self.conv0_a = _conv_relu_pool(input_dim_a, ch)
        self.conv0_b = _conv_relu_pool(input_dim_b, ch)
        self.conv1 = _conv_relu_pool(ch, ch * 2)
        self.conv2 = _conv_relu_pool(ch * 2, ch * 4)
        self.conv3 = _conv_relu_pool(ch * 4, ch * 8)
        self.conv4 = nn.Conv2d(ch * 8, 2, 2, 1, 0)
        self.conv_cl = nn.Conv2d(ch * 8, 10, 2, 1, 0)

    def _drop(self, i: int, x, keep):
        if keep is None:
            return F.dropout(x, DROPOUT_RATES[i], self.training)
        return x * keep[i].to(x.dtype) / (1.0 - DROPOUT_RATES[i])

    def core_dropout(self, h0, keep=None):
        h1 = self._drop(1, self.conv1(self._drop(0, h0, keep)), keep)
        h2 = self._drop(2, self.conv2(h1), keep)
        return self._drop(3, self.conv3(h2), keep)

    def core(self, h0):
        return self.conv3(self.conv2(self.conv1(h0)))

    def forward(self, x_a, x_b, keep=None):
        h0_a, h0_b = self.conv0_a(x_a), self.conv0_b(x_b)
        h3_a, h3_b = self.core(h0_a), self.core(h0_b)
        logits = self.conv4(self.core_dropout(torch.cat((h0_a, h0_b), 0), keep))
        return logits.squeeze(3).squeeze(2), h3_a, h3_b

    def classify_a(self, x_a, keep=None):
        return self.conv_cl(self.core_dropout(self.conv0_a(x_a), keep)).squeeze(3).squeeze(2)

    def classify_b(self, x_b, keep=None):
        return self.conv_cl(self.core_dropout(self.conv0_b(x_b), keep)).squeeze(3).squeeze(2)


def xy_image(width: int = 32) -> torch.Tensor:
    """(2, width, width): channel 0 the row, 1 the column, as (i - width/2) / (width/2)."""
    coords = np.asarray(list(itertools.product(range(width), range(width))), np.float32)
    grid = (coords.reshape(width, width, 2) - width / 2) / (width / 2)
    return torch.from_numpy(np.ascontiguousarray(grid.transpose(2, 0, 1)))


def with_xy(x):
    """NCHW images with the xy channels appended (the trainer's `torch.cat((x, self.xy), 1)`)."""
    return torch.cat((x, xy_image(x.size(2)).to(x).unsqueeze(0).expand(x.size(0), -1, -1, -1)), 1)


def init_reference(gen: nn.Module, dis: nn.Module) -> None:
    """The trainer's init: D convs xavier_uniform(gain sqrt 2), bias 0.1; G convs N(0, 0.02)."""
    for m in dis.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight, gain=np.sqrt(2))
            nn.init.constant_(m.bias, 0.1)
    for m in gen.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.weight.data.normal_(0.0, 0.02)


class UNITDAReference:
    """`COCOGANDAContextTrainer`: `dis_update` then `gen_update` on the same batch.

    `noise` (optional) injects the draws: for dis_update {'eps', 'true', 'recon', 'trans',
    'cls'}, for gen_update {'eps', 'recon', 'trans'}; each dropout entry is four NCHW masks.
    """

    def __init__(self, gen: CoVAE32x32, dis: CoDis32x32, hp: Mapping[str, float],
                 lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                 weight_decay: float = 5e-4):
        self.gen, self.dis, self.hp = gen, dis, dict(hp)
        self.dis_opt = torch.optim.Adam(dis.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self.gen_opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        self.terms: dict[str, Any] = {}

    def _xy(self, x):
        return with_xy(x)

    @staticmethod
    def kl(mu, sd):
        """sum(mu^2 + sd^2 - log sd^2) / batch (both domains' codes)."""
        mu2, sd2 = mu.pow(2), sd.pow(2)
        return (mu2 + sd2 - torch.log(sd2)).sum() / mu2.size(0)

    @staticmethod
    def ll(a, b):
        """MSE * C*H*W of b: the squared error summed per sample, averaged over the batch."""
        return F.mse_loss(a, b) * b.size(1) * b.size(2) * b.size(3)

    def dis_loss(self, images_a, labels_a, images_b, noise: Mapping[str, Any] | None = None):
        n = noise or {}
        true_res, _, _ = self.dis(images_a, images_b, n.get("true"))
        ones = torch.ones(true_res.size(0), dtype=torch.long)
        ad_true = F.cross_entropy(true_res, ones)
        x_aa, x_ba, x_ab, x_bb, _ = self.gen(self._xy(images_a), self._xy(images_b), n.get("eps"))
        recon_res, feat_aa, feat_bb = self.dis(x_aa, x_bb, n.get("recon"))
        trans_res, feat_ba, feat_ab = self.dis(x_ba, x_ab, n.get("trans"))
        zeros = torch.zeros(recon_res.size(0), dtype=torch.long)
        ad_fake = 0.5 * (F.cross_entropy(trans_res, zeros) + F.cross_entropy(recon_res, zeros))
        dummy = torch.zeros_like(feat_aa)
        feature_a = self.ll(feat_ab - feat_aa, dummy)
        feature_b = self.ll(feat_ba - feat_bb, dummy)
        cls = F.cross_entropy(self.dis.classify_a(images_a, n.get("cls")), labels_a)
        hp = self.hp
        total = (hp["gan_w"] * (ad_true + ad_fake) + hp["cls_w"] * cls
                 + hp["feature_w"] * (feature_a + feature_b))
        self.terms.update(ad_true=ad_true, ad_fake=ad_fake, feature_a=feature_a,
                          feature_b=feature_b, cls=cls, D=total)
        return total

    def gen_loss(self, images_a, images_b, noise: Mapping[str, Any] | None = None):
        n = noise or {}
        x_aa, x_ba, x_ab, x_bb, codes = self.gen(self._xy(images_a), self._xy(images_b), n.get("eps"))
        recon_res, _, _ = self.dis(x_aa, x_bb, n.get("recon"))
        trans_res, _, _ = self.dis(x_ba, x_ab, n.get("trans"))
        ones = torch.ones(trans_res.size(0), dtype=torch.long)
        ad = F.cross_entropy(trans_res, ones) + F.cross_entropy(recon_res, ones)
        ll_a, ll_b = self.ll(x_aa, images_a), self.ll(x_bb, images_b)
        enc = sum(2 * self.kl(mu, sd) for mu, sd in codes)
        hp = self.hp
        total = (hp["gan_w"] * ad + hp["kl_normalized_direct_w"] * enc
                 + hp["ll_normalized_direct_w"] * (ll_a + ll_b))
        self.terms.update(ad=ad, ll_a=ll_a, ll_b=ll_b, kl=enc, G=total)
        self.images = (x_aa, x_ba, x_ab, x_bb)
        return total

    def dis_update(self, images_a, labels_a, images_b, noise=None):
        self.dis.zero_grad()
        loss = self.dis_loss(images_a, labels_a, images_b, noise)
        loss.backward()
        self.dis_opt.step()
        return loss

    def gen_update(self, images_a, images_b, noise=None):
        self.gen.zero_grad()
        loss = self.gen_loss(images_a, images_b, noise)
        loss.backward()
        self.gen_opt.step()
        return loss

    def step(self, images_a, labels_a, images_b, noise: Sequence[Any] | None = None):
        """One iteration of the DA training script: dis.train(), dis_update, gen_update;
        returns the two losses."""
        self.dis.train()
        dn, gn = noise if noise is not None else (None, None)
        d_loss = self.dis_update(images_a, labels_a, images_b, dn)
        return d_loss, self.gen_update(images_a, images_b, gn)


def reference_step(config, device: str = "cpu", dtype=None, compile: bool = False):
    """One iteration of the DA training script (dis_update, gen_update) on fresh reference
    networks built from `config` (gen_ch, dis_ch, input_dim_a/b, loss weights, Adam), as
    `step(images_a, images_b)` for `unpaired.benchmarks.step`; the source labels are fixed
    random digits drawn once. `dtype=torch.bfloat16` runs under autocast; `compile=True`
    compiles both networks."""
    a, b = int(config.input_dim_a), int(config.input_dim_b)
    gen = CoVAE32x32(int(config.gen_ch), a + 2, a, b + 2, b)
    dis = CoDis32x32(int(config.dis_ch), a, b)
    init_reference(gen, dis)
    gen, dis = gen.to(device).train(), dis.to(device).train()
    hp = {k: float(config[k]) for k in ("gan_w", "cls_w", "feature_w", "kl_normalized_direct_w",
                                        "ll_normalized_direct_w")}
    model = UNITDAReference(gen, dis, hp, float(config.lr), (float(config.beta1), float(config.beta2)),
                            float(config.weight_decay))
    if compile:
        model.gen, model.dis = torch.compile(gen), torch.compile(dis)
    labels = torch.randint(0, 10, (int(config.batch_size),),
                           generator=torch.Generator().manual_seed(0)).to(device)
    autocast = dtype is not None and dtype != torch.float32

    def step(images_a, images_b):
        with torch.autocast(device_type=device, dtype=dtype, enabled=autocast):
            return model.step(images_a, labels, images_b)

    step.model = model
    return step
