"""PyTorch re-expression of UNIT's NIPS-2017 image model (mingyuliutw/UNIT, branch version_02):
COCOResGen2 / COCOResGen, COCOSharedDis and COCOGANTrainer's updates.

Written from the facts in ``shared/reference/unit.md`` §3.1, not copied. Module layout and
``state_dict`` names are the reference's (``encode_A.0.model.0.weight``,
``enc_shared.0.model.3.bias``, ``model_S.4.weight``), so a version_02 ``gen``/``dis``
state_dict maps one to one. For parity tests and the benchmark only (needs torch).

The GaussianNoiseLayer's draw can be injected: ``COCOGANReference.dis_loss`` / ``gen_loss``
take the noise tensors they would draw (``n_a``/``n_b``: the direct stream's halves;
``n_ba``/``n_ab``: the re-encodings of x_ba and x_ab).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
import torch.nn.functional as F

from unpaired.torch_reference.unit import AdamUpdates


class GaussianNoiseLayer(nn.Module):
    """Adds N(0, I) in training mode only; `inject` sets the next draw."""

    def __init__(self):
        super().__init__()
        self.injected: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        noise = self.injected if self.injected is not None else torch.randn_like(x)
        self.injected = None
        return x + noise


class INSResBlock(nn.Module):
    """conv3x3 -> IN -> ReLU -> conv3x3 -> IN, plus the identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1), nn.InstanceNorm2d(dim), nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1), nn.InstanceNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + x


class LeakyReLUConv2d(nn.Module):
    def __init__(self, n_in: int, n_out: int, k: int, s: int, p: int = 0):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(n_in, n_out, k, s, p), nn.LeakyReLU(inplace=True))

    def forward(self, x):
        return self.model(x)


class LeakyReLUConvTranspose2d(nn.Module):
    def __init__(self, n_in: int, n_out: int, k: int, s: int, p: int = 0, op: int = 0):
        super().__init__()
        self.model = nn.Sequential(nn.ConvTranspose2d(n_in, n_out, k, s, p, op),
                                   nn.LeakyReLU(inplace=True))

    def forward(self, x):
        return self.model(x)


class ReLUINSConv2d(nn.Module):
    def __init__(self, n_in: int, n_out: int, k: int, s: int, p: int = 0):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(n_in, n_out, k, s, p), nn.InstanceNorm2d(n_out),
                                   nn.ReLU(inplace=True))

    def forward(self, x):
        return self.model(x)


class ReLUINSConvTranspose2d(nn.Module):
    def __init__(self, n_in: int, n_out: int, k: int, s: int, p: int, op: int):
        super().__init__()
        self.model = nn.Sequential(nn.ConvTranspose2d(n_in, n_out, k, s, p, op),
                                   nn.InstanceNorm2d(n_out), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.model(x)


class COCOResGen2(nn.Module):
    """Both generators in one module: encode_A/B, enc_shared (+ noise), dec_shared, decode_A/B.

    `gen_name='COCOResGen'` swaps the stride-2 convs for ReLU + IN ones (same keys).
    """

    def __init__(self, input_dim_a=3, input_dim_b=3, ch=64, n_enc_front_blk=3, n_enc_res_blk=3,
                 n_enc_shared_blk=1, n_gen_shared_blk=1, n_gen_res_blk=3, n_gen_front_blk=3,
                 gen_name="COCOResGen2"):
        super().__init__()
        down = LeakyReLUConv2d if gen_name == "COCOResGen2" else ReLUINSConv2d
        up = LeakyReLUConvTranspose2d if gen_name == "COCOResGen2" else ReLUINSConvTranspose2d

        def encoder(in_dim):
            mods, tch = [LeakyReLUConv2d(in_dim, ch, 7, 1, 3)], ch
            for _ in range(1, n_enc_front_blk):
                mods.append(down(tch, tch * 2, 3, 2, 1))
                tch *= 2
            mods += [INSResBlock(tch) for _ in range(n_enc_res_blk)]
            return nn.Sequential(*mods), tch

        def decoder(out_dim, tch):
            mods = [INSResBlock(tch) for _ in range(n_gen_res_blk)]
            for _ in range(n_gen_front_blk - 1):
                mods.append(up(tch, tch // 2, 3, 2, 1, 1))
                tch //= 2
            mods += [nn.ConvTranspose2d(tch, out_dim, 1, 1, 0), nn.Tanh()]
            return nn.Sequential(*mods)

        self.encode_A, tch = encoder(input_dim_a)
        self.encode_B, _ = encoder(input_dim_b)
        self.enc_shared = nn.Sequential(*[INSResBlock(tch) for _ in range(n_enc_shared_blk)],
                                        GaussianNoiseLayer())
        self.dec_shared = nn.Sequential(*[INSResBlock(tch) for _ in range(n_gen_shared_blk)])
        self.decode_A = decoder(input_dim_a, tch)
        self.decode_B = decoder(input_dim_b, tch)

    def _noise(self, noise):
        self.enc_shared[-1].injected = noise

    def forward(self, x_A, x_B, noise=None):
        self._noise(noise)
        shared = self.enc_shared(torch.cat((self.encode_A(x_A), self.encode_B(x_B)), 0))
        out = self.dec_shared(shared)
        x_Aa, x_Ba = torch.split(self.decode_A(out), x_A.size(0), 0)
        x_Ab, x_Bb = torch.split(self.decode_B(out), x_A.size(0), 0)
        return x_Aa, x_Ba, x_Ab, x_Bb, shared

    def forward_a2b(self, x_A, noise=None):
        self._noise(noise)
        shared = self.enc_shared(self.encode_A(x_A))
        return self.decode_B(self.dec_shared(shared)), shared

    def forward_b2a(self, x_B, noise=None):
        self._noise(noise)
        shared = self.enc_shared(self.encode_B(x_B))
        return self.decode_A(self.dec_shared(shared)), shared


class COCOSharedDis(nn.Module):
    """model_A/model_B: k7 s2 then k3 s2 lrelu convs; model_S: shared k3 s2 convs + 1x1 conv."""

    def __init__(self, ch=64, input_dim_a=3, input_dim_b=3, n_front_layer=2, n_shared_layer=4):
        super().__init__()

        def front(in_dim):
            mods, tch = [LeakyReLUConv2d(in_dim, ch, 7, 2, 3)], ch
            for _ in range(1, n_front_layer):
                mods.append(LeakyReLUConv2d(tch, tch * 2, 3, 2, 1))
                tch *= 2
            if n_shared_layer == 0:
                mods.append(nn.Conv2d(tch, 1, 1, 1, 0))
            return nn.Sequential(*mods), tch

        self.model_A, tch = front(input_dim_a)
        self.model_B, _ = front(input_dim_b)
        mods = []
        if n_shared_layer:
            for _ in range(n_shared_layer):
                mods.append(LeakyReLUConv2d(tch, tch * 2, 3, 2, 1))
                tch *= 2
            mods.append(nn.Conv2d(tch, 1, 1, 1, 0))
        self.model_S = nn.Sequential(*mods)

    def forward(self, x_A, x_B):
        return [self.model_S(self.model_A(x_A)).view(-1)], [self.model_S(self.model_B(x_B)).view(-1)]


def gaussian_weights_init(net: nn.Module, gen: torch.Generator | None = None) -> nn.Module:
    """N(0, 0.02) on every module whose class name starts with 'Conv'; biases untouched."""
    for m in net.modules():
        if type(m).__name__.startswith("Conv"):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=gen)
    return net


def build_unit_v02(config, seed: int = 0) -> dict[str, nn.Module]:
    """{'gen': COCOResGen2, 'dis': COCOSharedDis} from a unit config (arch version_02)."""
    torch.manual_seed(seed)
    gen = COCOResGen2(config.input_dim_a, config.input_dim_b, config.gen_dim,
                      config.gen_n_enc_front_blk, config.gen_n_enc_res_blk,
                      config.gen_n_enc_shared_blk, config.gen_n_gen_shared_blk,
                      config.gen_n_gen_res_blk, config.gen_n_gen_front_blk, config.gen_name)
    dis = COCOSharedDis(config.dis_dim, config.input_dim_a, config.input_dim_b,
                        config.dis_n_front_layer, config.dis_n_shared_layer)
    g = torch.Generator().manual_seed(seed)
    return {"gen": gaussian_weights_init(gen, g), "dis": gaussian_weights_init(dis, g)}


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    probs = torch.sigmoid(logits)
    return F.binary_cross_entropy(probs, torch.full_like(probs, target))


class COCOGANReference(AdamUpdates):
    """`COCOGANTrainer`: Adam(lr, (0.5, 0.999), wd 1e-4) for gen and dis, no lr decay;
    an iteration is `dis_update` then `gen_update` on the same pair."""

    def __init__(self, nets: Mapping[str, nn.Module], hp: Mapping[str, float]):
        self.gen, self.dis, self.hp = nets["gen"], nets["dis"], dict(hp)
        betas = (hp["beta1"], hp["beta2"])
        self.dis_opt = torch.optim.Adam(self.dis.parameters(), lr=hp["lr"], betas=betas,
                                        weight_decay=hp["weight_decay"])
        self.gen_opt = torch.optim.Adam(self.gen.parameters(), lr=hp["lr"], betas=betas,
                                        weight_decay=hp["weight_decay"])

    def dis_loss(self, x_a, x_b, noise=None):
        noise = noise or {}
        shared_noise = (torch.cat((noise["n_a"], noise["n_b"]), 0) if "n_a" in noise else None)
        _, x_ba, x_ab, _, _ = self.gen(x_a, x_b, shared_noise)
        res_a, res_b = self.dis(torch.cat((x_a, x_ba), 0), torch.cat((x_b, x_ab), 0))
        terms = {}
        for name, (res,) in (("dis_a", res_a), ("dis_b", res_b)):
            true, fake = torch.split(res, res.size(0) // 2, 0)
            terms[name] = _bce(true, 1.0) + _bce(fake, 0.0)
        return self.hp["gan_w"] * (terms["dis_a"] + terms["dis_b"]), terms

    def gen_loss(self, x_a, x_b, noise=None):
        noise, hp = noise or {}, self.hp
        shared_noise = (torch.cat((noise["n_a"], noise["n_b"]), 0) if "n_a" in noise else None)
        x_aa, x_ba, x_ab, x_bb, shared = self.gen(x_a, x_b, shared_noise)
        x_bab, shared_bab = self.gen.forward_a2b(x_ba, noise.get("n_ba"))
        x_aba, shared_aba = self.gen.forward_b2a(x_ab, noise.get("n_ab"))
        (out_a,), (out_b,) = self.dis(x_ba, x_ab)
        l1 = lambda p, t: torch.mean(torch.abs(p - t))
        t = {"ad_loss_a": _bce(out_a, 1.0), "ad_loss_b": _bce(out_b, 1.0),
             "enc_loss": torch.mean(shared ** 2), "enc_bab_loss": torch.mean(shared_bab ** 2),
             "enc_aba_loss": torch.mean(shared_aba ** 2),
             "ll_loss_a": l1(x_aa, x_a), "ll_loss_b": l1(x_bb, x_b),
             "ll_loss_aba": l1(x_aba, x_a), "ll_loss_bab": l1(x_bab, x_b)}
        total = (hp["gan_w"] * (t["ad_loss_a"] + t["ad_loss_b"])
                 + hp["recon_x_w"] * (t["ll_loss_a"] + t["ll_loss_b"])
                 + hp["recon_x_cyc_w"] * (t["ll_loss_aba"] + t["ll_loss_bab"])
                 + hp["recon_kl_w"] * (t["enc_loss"] + t["enc_loss"])
                 + hp["recon_kl_cyc_w"] * (t["enc_bab_loss"] + t["enc_aba_loss"]))
        images = {"x_aa": x_aa, "x_ba": x_ba, "x_ab": x_ab, "x_bb": x_bb,
                  "x_aba": x_aba, "x_bab": x_bab}
        return total, t, images

    def step(self, x_a, x_b, dis_noise=None, gen_noise=None):
        """One iteration of cocogan_train.py: dis_update, then gen_update (same pair)."""
        return self.dis_update(x_a, x_b, dis_noise), self.gen_update(x_a, x_b, gen_noise)

    def translate(self, x: torch.Tensor, a2b: bool = True) -> torch.Tensor:
        """forward_a2b / forward_b2a in eval mode (the noise layer adds nothing)."""
        was = self.gen.training
        self.gen.eval()
        try:
            with torch.no_grad():
                out, _ = (self.gen.forward_a2b if a2b else self.gen.forward_b2a)(x)
        finally:
            self.gen.train(was)
        return out
