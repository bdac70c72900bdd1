"""Tiny configs of every method for the scale-out tests: a multiple of 8 samples per batch.

No side effects on import (the 8-device worker turns on float64; the 2-process worker must not).
"""

from __future__ import annotations

from configs import cyclegan as cyclegan_config
from configs import dtn as dtn_config
from configs import ufdn as ufdn_config
from configs import unit as unit_config
from tests.overrides import set_keys

DEVICES = 8


def _set(config, **overrides):
    """`config` with `a__b=v` meaning config.a.b = v."""
    return set_keys(config, overrides, sep="__")


def cyclegan(**overrides):
    """CycleGAN shrunk: 16x16, 4-channel nets, a 2-layer PatchGAN, image pools of 3."""
    tiny = dict(ngf=4, ndf=4, netD="n_layers", n_layers_D=2, batch_size=DEVICES, pool_size=3,
                data__image_size=16, data__crop_size=16, data__load_size=16)
    return _set(cyclegan_config.get_config("digits"), **{**tiny, **overrides})


def unit():
    return _set(unit_config.get_config("digits"), gen_dim=4, gen_n_res=1, dis_dim=4, dis_n_layer=2,
                dis_num_scales=1, batch_size=DEVICES, data__image_size=16, data__crop_size=16, data__load_size=16)


def unit_da():
    """UNIT's digit DA model (BatchNorm, D dropout masks, labels), 32x32 as CoVAE32x32 needs."""
    return _set(unit_config.get_config("mnist2usps"), gen_ch=4, dis_ch=4, batch_size=DEVICES)


def _tiny_ufdn(config):
    """UFDN's networks shrunk to 16x16 and 4-8 channels (BatchNorm in E, G and D_x)."""
    conv = lambda out, norm="bn", act="LeakyReLU": ["conv", out, 4, 2, 1, norm, act]
    config.data.image_size = config.data.load_size = config.data.crop_size = 16
    config.encoder = [conv(4), conv(8), conv(8), conv(6, "", "")]
    config.decoder = [conv(8) + [True], conv(8) + [False], conv(4) + [False],
                      conv(3, "", "Tanh") + [False]]
    config.batch_size = 2 * DEVICES  # per domain
    return config


def ufdn_translation():
    """3 built-in domains, every loss term on (the GP's per-sample mixing weights too)."""
    config = _tiny_ufdn(ufdn_config.get_config("digits"))
    conv = lambda out, norm="bn", act="LeakyReLU": ["conv", out, 4, 2, 1, norm, act]
    config.D_feat = [["fc", 8, "", "LeakyReLU", 0], ["fc", 3, "", "", 0]]
    config.D_pix = [conv(4, ""), conv(8, "bn"), ["fc", 8, "", "LeakyReLU", 0], ["fc", [1, 3], "", "", 0]]
    for name, value in dict(pix_recon=(10.0, 1.0, 2), kl=(1e-3, 2e-3, 2), feat_domain=(0.5, 1.0, 3),
                            gp=(100.0, 100.0, 1), pix_adv=(0.1, 0.35, 2), pix_clf=(0.2, 0.1, 3)).items():
        config.lambdas[name] = value
    return config


def ufdn_uda():
    """MNIST -> USPS shape: labels, the mixed batch and its inversion augmentation."""
    config = _tiny_ufdn(ufdn_config.get_config("uda"))
    config.data_augment = True
    config.D_feat = [["fc", 8, "", "LeakyReLU", 0], ["fc", 2, "", "", 0]]
    config.lambdas.feat_domain = (0.1, 0.3, 2)
    return config


def dtn(stage1=False):
    config = dtn_config.get_config("digits_pretrain" if stage1 else "digits")
    return _set(config, nf=4, feature_dim=8, ngf=4, ndf=4, batch_size=2 * DEVICES)


# Every registered method once (the test runs them in two processes side by side). CycleGAN
# with BatchNorm: its pools and synchronised BatchNorm (InstanceNorm, the default, is per
# sample: nothing crosses devices); per-device BatchNorm runs on dtn_pretrain's f.
CASES = {
    "cyclegan_batchnorm": lambda: cyclegan(norm="batch"),
    "unit": unit,
    "unit_da": unit_da,
    "ufdn_uda": ufdn_uda,
    "ufdn_translation": ufdn_translation,
    "dtn_pretrain": lambda: dtn(stage1=True),
    "dtn": dtn,
}
