"""UFDN in PyTorch, re-expressed from `shared/reference/ufdn.md` for parity tests.

Module layout and state_dict names are the official code's (`src/ufdn.py`): `UFDN` with
`enc_i`, `enc_mu`, `enc_logvar`, `dec_i` ConvBlocks, `Discriminator` with `layer_i` and
`layer_out_j`. Written from the facts document, not copied. Every random draw
(reparameterisation eps, the gradient penalty's alpha) can be injected, so the JAX side can
be fed the same noise. Test/benchmark only: needs torch.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn


def get_act(name: str) -> nn.Module | None:
    """The activation module of a layer spec ('' -> none)."""
    return {"LeakyReLU": lambda: nn.LeakyReLU(0.2), "ReLU": nn.ReLU, "Tanh": nn.Tanh,
            "Sigmoid": nn.Sigmoid, "": lambda: None}[name]()


def conv_block(in_ch: int, spec: Sequence[Any], transpose: bool = False) -> nn.Sequential:
    """ConvBlock: [Conv2d|ConvTranspose2d] -> [BatchNorm2d] -> [act]."""
    _, out, k, s, p, norm, act = spec[:7]
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    mods = [conv(in_ch, out, k, s, p, bias=True)]
    if norm == "bn":
        mods.append(nn.BatchNorm2d(out))
    a = get_act(act)
    if a is not None:
        mods.append(a)
    return nn.Sequential(*mods)


def fc_block(in_dim: int, spec: Sequence[Any]) -> nn.Sequential:
    """FC: Linear -> [BatchNorm1d] -> [act] (dropout 0 in every reference config)."""
    _, out, norm, act = spec[:4]
    mods = [nn.Linear(in_dim, out)]
    if norm == "bn":
        mods.append(nn.BatchNorm1d(out))
    a = get_act(act)
    if a is not None:
        mods.append(a)
    return nn.Sequential(*mods)


def weights_init(m: nn.Module, gen: torch.Generator | None = None) -> None:
    """Conv*: weight ~ N(0, 0.02) (bias untouched); BatchNorm*: gamma ~ N(0, 0.02), beta 0."""
    name = m.__class__.__name__
    if "Conv" in name:
        with torch.no_grad():
            m.weight.normal_(0.0, 0.02, generator=gen)
    elif "BatchNorm" in name:
        with torch.no_grad():
            m.weight.normal_(0.0, 0.02, generator=gen)
            m.bias.fill_(0)


class UFDN(nn.Module):
    """E + G: `forward(x, insert_attrs, return_enc, eps)`."""

    def __init__(self, encoder: Sequence, decoder: Sequence, code_dim: int, in_ch: int = 3):
        super().__init__()
        self.enc_layers = []
        ch = in_ch
        for i, spec in enumerate(encoder[:-1]):
            setattr(self, f"enc_{i}", conv_block(ch, spec))
            self.enc_layers.append("conv")
            ch = spec[1]
        self.enc_mu = conv_block(ch, encoder[-1])
        self.enc_logvar = conv_block(ch, encoder[-1])
        ch = encoder[-1][1]
        self.dec_layers = []
        for i, spec in enumerate(decoder):
            insert = bool(spec[7]) if len(spec) > 7 else False
            setattr(self, f"dec_{i}", conv_block(ch + (code_dim if insert else 0), spec, True))
            self.dec_layers.append(("conv", insert))
            ch = spec[1]
        self.attr_dim = code_dim
        self.apply(weights_init)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for i in range(len(self.enc_layers)):
            h = getattr(self, f"enc_{i}")(h)
        mu = self.enc_mu(h)
        logvar = self.enc_logvar(h)
        return mu.view(mu.size(0), -1), logvar.view(logvar.size(0), -1)

    def reparameterize(self, mu, logvar, eps=None):
        if self.training:
            std = torch.exp(0.5 * logvar)
            eps = torch.randn_like(std) if eps is None else eps
            return mu + eps * std
        return mu

    def decode(self, z, insert_attrs=None):
        h = z
        for i, (kind, insert) in enumerate(self.dec_layers):
            if h.dim() == 2:
                h = h.view(h.size(0), h.size(1), 1, 1)
            if insert and insert_attrs is not None:
                code = insert_attrs.view(insert_attrs.size(0), -1, 1, 1)
                code = code.expand(-1, -1, h.size(2), h.size(3))
                h = torch.cat([h, code], dim=1)
            h = getattr(self, f"dec_{i}")(h)
        return h

    def forward(self, x, insert_attrs=None, return_enc=False, eps=None):
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, eps)
        if return_enc:
            return z
        return self.decode(z, insert_attrs), mu, logvar


class Discriminator(nn.Module):
    """`layer_i` hidden blocks then one Linear head `layer_out_j` per output size."""

    def __init__(self, dnn: Sequence, in_ch: int, img_size: int = 1):
        super().__init__()
        self.layer_list = []
        ch, size = in_ch, img_size
        flat = None
        for i, spec in enumerate(dnn[:-1]):
            if spec[0] == "conv":
                setattr(self, f"layer_{i}", conv_block(ch, spec))
                ch, size = spec[1], size // 2
            else:
                dim = flat if flat is not None else (ch * size * size if self.layer_list and
                                                     self.layer_list[-1] == "conv" else ch)
                setattr(self, f"layer_{i}", fc_block(dim, spec))
                flat = spec[1]
            self.layer_list.append(spec[0])
        dim = flat if flat is not None else (ch * size * size if self.layer_list else ch)
        outs = dnn[-1][1]
        self.output_dim = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        for j, out in enumerate(self.output_dim):
            setattr(self, f"layer_out_{j}", nn.Sequential(nn.Linear(dim, out)))
        self.apply(weights_init)

    def forward(self, x):
        h = x
        for i, kind in enumerate(self.layer_list):
            if kind == "fc" and h.dim() == 4:
                h = h.view(h.size(0), -1)
            h = getattr(self, f"layer_{i}")(h)
        if h.dim() == 4:
            h = h.view(h.size(0), -1)
        outs = [getattr(self, f"layer_out_{j}")(h) for j in range(len(self.output_dim))]
        return outs[0] if len(outs) == 1 else tuple(outs)


# ----------------------------------------------------------------- losses
def vae_loss(x_rec, x, mu, logvar):
    """(MSE mean, KL summed over batch and dims)."""
    mse = nn.functional.mse_loss(x_rec, x)
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return mse, kl


def calc_gradient_penalty(d_pix, real, fake, alpha):
    """mean over (n, h, w) of (||dD/dx||_2 over channels - 1)^2 at alpha*real + (1-alpha)*fake."""
    alpha = alpha.view(-1, 1, 1, 1)
    points = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    critic = d_pix(points)[0]
    g = torch.autograd.grad(critic.sum(), points, create_graph=True)[0]
    return ((g.norm(2, dim=1) - 1) ** 2).mean()


class Objective:
    """The losses of `objective` 'code' (official BCE, inverted target, WGAN-GP) or 'paper'
    (eqs. (2)-(5) with the seed post's sign corrections, softmax classifiers, log-loss D_x)."""

    def __init__(self, objective: str = "code"):
        assert objective in ("code", "paper"), objective
        self.paper = objective == "paper"
        self.bce = nn.BCEWithLogitsLoss()

    def domain_loss(self, logits, code):
        """-E[log P(l = code)]: sigmoid BCE (code) or softmax cross-entropy (paper)."""
        if self.paper:
            return nn.functional.cross_entropy(logits, code)  # probability targets
        return self.bce(logits, code)

    def encoder_adversarial(self, logits, code):
        """BCE to 1 - code (code) or +E[log P(l_v = v_c | z)] = -L_Dv (paper)."""
        if self.paper:
            return -nn.functional.cross_entropy(logits, code)
        return self.bce(logits, 1 - code)

    def critic_terms(self, s_real, s_fake):
        """(real, fake): (-mean D(real), mean D(fake)) or (E[log(1 - D(real))], E[log D(fake)])."""
        if self.paper:
            return (nn.functional.logsigmoid(-s_real).mean(),
                    nn.functional.logsigmoid(s_fake).mean())
        return -s_real.mean(), s_fake.mean()

    def generator_adversarial(self, s_fake):
        """-mean D(fake) (code) or -E[log D(fake)] (paper)."""
        if self.paper:
            return -nn.functional.logsigmoid(s_fake).mean()
        return -s_fake.mean()


class LambdaRamp:
    """One `trainer.lambda` entry: cur = init; after each step, if inc*cur < inc*final: cur += inc."""

    def __init__(self, init: float, final: float, step: float):
        self.cur, self.final = float(init), float(final)
        self.inc = (self.final - self.cur) / step

    def update(self) -> None:
        if self.inc * self.cur < self.inc * self.final:
            self.cur += self.inc


class UFDNFaceReference:
    """`train_face.py`'s iteration on given networks, noise injected; lambdas as ramps."""

    def __init__(self, vae: UFDN, d_feat: Discriminator, d_pix: Discriminator,
                 lambdas: Mapping[str, Sequence[float]], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.5, 0.999), objective: str = "code"):
        self.vae, self.d_feat, self.d_pix = vae, d_feat, d_pix
        self.obj = Objective(objective)
        self.opt_vae = torch.optim.Adam(vae.parameters(), lr=lr, betas=betas)
        self.opt_df = torch.optim.Adam(d_feat.parameters(), lr=lr, betas=betas)
        self.opt_dp = torch.optim.Adam(d_pix.parameters(), lr=lr, betas=betas)
        self.ramps = {k: LambdaRamp(*v) for k, v in lambdas.items()}
        self.bce = nn.BCEWithLogitsLoss()
        for m in (vae, d_feat, d_pix):
            m.train()

    def lam(self, name: str) -> float:
        return self.ramps[name].cur

    def d_feat_loss(self, x, v, eps):
        z = self.vae(x, return_enc=True, eps=eps).detach()
        return self.obj.domain_loss(self.d_feat(z), v)

    def d_pix_loss(self, x, v, t, eps, alpha):
        s_real, c_real = self.d_pix(x)
        x_fake = self.vae(x, insert_attrs=t, eps=eps)[0].detach()
        s_fake, _ = self.d_pix(x_fake)
        real, fake = self.obj.critic_terms(s_real, s_fake)
        terms = {"Dx_clf": self.obj.domain_loss(c_real, v), "Dx_real": real, "Dx_fake": fake}
        total = terms["Dx_clf"] + terms["Dx_fake"] + terms["Dx_real"]
        if self.obj.paper:  # the paper's D_x has no gradient penalty
            return total, terms
        gp = calc_gradient_penalty(self.d_pix, x, x_fake, alpha)
        terms["gp"] = gp
        return total + self.lam("gp") * gp, terms

    def vae_losses(self, x, v, t, eps_rec, eps_feat, eps_pix, eps_unused):
        x_rec, mu, logvar = self.vae(x, insert_attrs=v, eps=eps_rec)
        mse, kl = vae_loss(x_rec, x, mu, logvar)
        rec = self.lam("pix_recon") * mse + self.lam("kl") * kl
        z2 = self.vae(x, return_enc=True, eps=eps_feat)
        feat = self.lam("feat_domain") * self.obj.encoder_adversarial(self.d_feat(z2), v)
        z3 = self.vae(x, return_enc=True, eps=eps_pix).detach()
        x_tr = self.vae.decode(z3, t)
        self.vae(x_tr, return_enc=True, eps=eps_unused)  # unused; BN statistics only
        s, c = self.d_pix(x_tr)
        adv = self.lam("pix_adv") * self.obj.generator_adversarial(s)
        clf = self.lam("pix_clf") * self.obj.domain_loss(c, t)
        terms = {"mse": mse, "kl": kl, "rec": rec, "feat": feat, "adv": adv, "clf": clf}
        return rec, feat, adv + clf, terms

    def step(self, x, v, t, noise: Mapping[str, torch.Tensor]) -> dict:
        """One iteration (D_v, D_x, E/G), then the ramp update; returns the loss terms."""
        self.opt_df.zero_grad()
        l_dv = self.d_feat_loss(x, v, noise["eps_dv"])
        l_dv.backward()
        self.opt_df.step()
        self.opt_dp.zero_grad()
        l_dx, dx_terms = self.d_pix_loss(x, v, t, noise["eps_dx"], noise["alpha"])
        l_dx.backward()
        self.opt_dp.step()
        self.opt_vae.zero_grad()
        rec, feat, pix, terms = self.vae_losses(x, v, t, noise["eps_rec"], noise["eps_feat"],
                                                noise["eps_pix"], noise["eps_unused"])
        rec.backward()
        feat.backward()
        pix.backward()
        self.opt_vae.step()
        for ramp in self.ramps.values():
            ramp.update()
        out = {"Dv": l_dv, "Dx": l_dx, **dx_terms, **terms}
        return {k: v.detach() for k, v in out.items()}


class UFDNUdaReference:
    """`train_uda.py`'s iteration: D_v, then E/G/D_digit under one Adam; noise injected."""

    def __init__(self, vae: UFDN, d_feat: Discriminator, d_digit: Discriminator,
                 lambdas: Mapping[str, Sequence[float]], lr: float = 1e-4,
                 betas: tuple[float, float] = (0.5, 0.999), objective: str = "code"):
        self.vae, self.d_feat, self.d_digit = vae, d_feat, d_digit
        self.obj = Objective(objective)
        self.opt_vae = torch.optim.Adam(list(vae.parameters()) + list(d_digit.parameters()),
                                        lr=lr, betas=betas)
        self.opt_df = torch.optim.Adam(d_feat.parameters(), lr=lr, betas=betas)
        self.ramps = {k: LambdaRamp(*v) for k, v in lambdas.items()}
        self.bce = nn.BCEWithLogitsLoss()
        self.ce = nn.CrossEntropyLoss(ignore_index=-1)
        for m in (vae, d_feat, d_digit):
            m.train()

    def step(self, x, code, labels, noise: Mapping[str, torch.Tensor]) -> dict:
        """One iteration; `labels` holds -1 for target samples. Returns the loss terms."""
        lam = {k: r.cur for k, r in self.ramps.items()}
        self.opt_df.zero_grad()
        z = self.vae(x, return_enc=True, eps=noise["eps_dv"]).detach()
        l_dv = self.obj.domain_loss(self.d_feat(z), code)
        l_dv.backward()
        self.opt_df.step()
        self.opt_vae.zero_grad()
        x_rec, mu, logvar = self.vae(x, insert_attrs=code, eps=noise["eps_rec"])
        mse, kl = vae_loss(x_rec, x, mu, logvar)
        rec = lam["pix_recon"] * mse + lam["kl"] * kl
        rec.backward()
        z2 = self.vae(x, return_enc=True, eps=noise["eps_feat"])
        feat = lam["feat_domain"] * self.obj.encoder_adversarial(self.d_feat(z2), code)
        feat.backward()
        z3 = self.vae(x, return_enc=True, eps=noise["eps_digit"])
        digit = self.ce(self.d_digit(z3), labels)
        digit.backward()
        self.opt_vae.step()
        for ramp in self.ramps.values():
            ramp.update()
        out = {"Dv": l_dv, "mse": mse, "kl": kl, "rec": rec, "feat": feat, "digit": digit}
        return {k: v.detach() for k, v in out.items()}
