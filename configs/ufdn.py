"""UFDN configs: `get_config(preset)`, e.g. `--config=configs/ufdn.py:digits`.

Networks are the reference's YAML layer lists (`model.vae.encoder` etc., see
`unpaired/nets/ufdn.py`); loss weights are `trainer.lambda` ramps (init, final, steps).
Presets:
  digits  built-in, offline: 3 domains (handwritten, printed, thick digits), 32x32 RGB
          (grey repeated, as the reference feeds digits), tiny widths; fast on a CPU.
  face    the official face_hd.yaml networks and schedule: 64x64 RGB, 3 domains, z 1024;
          data from folders (--config.data.dataroot with train/<domain>/ folders).
  uda     the official uda_example.yaml networks at 32x32, procedure uda; MNIST (source,
          labelled) -> USPS (target) from the data root's IDX files (`python -m launch.fetch
          mnist usps`), grey repeated to 3 ch.
  uda_small  the uda procedure and data with narrow networks (z 64), for CPU runs.
  uda_cpu    uda_small at lr 3e-4 for 20,000 steps: the digits benchmark's CPU preset.
  folder  the face networks on any N domain folders (--config.data.domains=a,b,c).
"""

import ml_collections

from configs.common import add_run_keys
from unpaired.data import cache
from unpaired.data.config import data_config


def _conv(out, norm="bn", act="LeakyReLU"):
    return ["conv", out, 4, 2, 1, norm, act]


def _deconv(out, norm="bn", act="LeakyReLU", insert=False):
    return ["conv", out, 4, 2, 1, norm, act, insert]


def _fc(out, act="LeakyReLU"):
    return ["fc", out, "", act, 0]


def _data(source: str) -> ml_collections.ConfigDict:
    """The shared data block: domains in code order (domain k has code e_k); the reference
    resizes once and never crops or flips."""
    return data_config(source, domains="A,B,C", preprocess="none", load_size=32, crop_size=32,
                       no_flip=True, num_workers=2)


def _face_networks(c: ml_collections.ConfigDict) -> None:
    """face_hd.yaml: 64x64x3, z 1024, code 3; D_v 4 fc; D_x 5 convs + fc + heads [1, 3]."""
    c.encoder = [_conv(64), _conv(128), _conv(256), _conv(512), _conv(1024), _conv(1024, "", "")]
    c.decoder = [_deconv(1024, insert=True), _deconv(512), _deconv(256), _deconv(128),
                 _deconv(64), _deconv(3, "", "Tanh")]
    c.D_feat = [_fc(512), _fc(256), _fc(128), _fc(64), _fc(3, "")]
    c.D_pix = [_conv(16, ""), _conv(32, ""), _conv(64, ""), _conv(128, ""), _conv(256, ""),
               _fc(512), _fc([1, 3], "")]
    c.D_digit = [_fc(10, "")]
    c.lambdas = ml_collections.ConfigDict(dict(
        pix_recon=(100.0, 1.0, 1000), kl=(1e-6, 1e-6, 1), feat_domain=(0.0, 1.0, 10000),
        gp=(100.0, 100.0, 1), pix_adv=(0.0, 1e-6, 10000), pix_clf=(0.0, 1e-6, 10000)))


def get_config(preset: str = "digits") -> ml_collections.ConfigDict:
    """The resolved config for `preset`; every field can be overridden as --config.x=y."""
    c = ml_collections.ConfigDict()
    c.method = "ufdn"
    c.procedure = "translation"  # translation (train_face.py) | uda (train_uda.py)
    c.objective = "code"        # code (official losses) | paper (eqs. 2-5, sign-corrected)
    c.seed = 1
    c.img_depth = 3
    _face_networks(c)
    c.data_augment = False      # uda: invert 1-channel batches on odd steps
    # Optimisation: three Adams (vae, D_feat, D_pix), reference lr and betas, no schedule.
    c.lr = 1e-4
    c.lr_schedule = "constant"  # constant (the reference) | cosine (to 0 over max_steps)
    c.beta1 = 0.5
    c.beta2 = 0.999
    c.batch_size = 32           # per domain (the reference's batch of each loader)
    # Generic run keys; max_steps: the reference's total_step.
    add_run_keys(c, max_steps=250000, log_every=100, sample_every=1000, checkpoint_every=5000)
    c.data = _data("folder")

    if preset == "digits":
        c.encoder = [_conv(8), _conv(16), _conv(32), _conv(32), _conv(16, "", "")]
        c.decoder = [_deconv(32, insert=True), _deconv(32), _deconv(16), _deconv(8),
                     _deconv(3, "", "Tanh")]
        c.D_feat = [_fc(16), _fc(3, "")]
        c.D_pix = [_conv(8, ""), _conv(16, ""), _conv(32, ""), _fc(32), _fc([1, 3], "")]
        # Measured with launch.demo_benchmark (docs/quality.md, issue 23): the earlier 400
        # steps at lr 2e-4 with pix_adv 1e-3 gave one striped image for every input
        # (translation accuracy 0.104, diversity 0.06): the VAE had not learned to reconstruct
        # by then, and a critic scoring real and fake ~5,000 apart, weighted 1e-3, drove G.
        # lr 1e-3 learns the VAE ~5x faster; pix_adv/pix_clf 1e-5 (the face config: 1e-6).
        c.lambdas.pix_recon = (10.0, 1.0, 100)
        c.lambdas.feat_domain = (0.0, 1.0, 1000)
        c.lambdas.pix_adv = (0.0, 1e-5, 1000)
        c.lambdas.pix_clf = (0.0, 1e-5, 1000)
        c.lr = 1e-3
        c.batch_size = 8
        c.max_steps = 2000
        c.log_every = 50
        c.sample_every = 500
        c.checkpoint_every = 500
        c.data = _data("digits")
        c.data.digits = "A=handwritten,B=printed,C=thick"
    elif preset in ("face", "folder"):
        # Folder images resized to 64x64 (a 64 crop of a 64 resize), never flipped.
        c.data.image_size = c.data.load_size = c.data.crop_size = 64
        c.data.preprocess = "resize_and_crop"
        if preset == "face":
            c.data.domains = "photo,sketch,paint"
    elif preset in ("uda", "uda_small", "uda_cpu"):
        c.procedure = "uda"
        c.seed = 123456
        c.encoder = [_conv(128), _conv(256), _conv(512), _conv(1024), _conv(2048, "", "")]
        c.decoder = [_deconv(1024, insert=True), _deconv(512), _deconv(256), _deconv(128),
                     _deconv(3, "", "Tanh")]
        c.D_feat = [_fc(1024), _fc(256), _fc(2, "")]
        c.D_digit = [_fc(10, "")]
        c.lambdas = ml_collections.ConfigDict(dict(
            pix_recon=(1.0, 1.0, 1), kl=(1e-7, 1e-7, 1), feat_domain=(0.1, 0.1, 1)))
        c.batch_size = 16
        c.max_steps = 500000
        c.log_every = 100
        c.sample_every = 500
        c.eval_batch_size = 100   # final accuracy: full test batches, as train_uda.py
        c.data = _data("idx")
        c.data.domains = "mnist,usps"
        c.data.idx = ",".join(f"{n}={cache.digits_train_images(n)}" for n in ("mnist", "usps"))
        if preset in ("uda_small", "uda_cpu"):  # narrow widths (0.41M UFDN parameters): CPU runs, tests
            c.encoder = [_conv(16), _conv(32), _conv(64), _conv(64), _conv(64, "", "")]
            c.decoder = [_deconv(64, insert=True), _deconv(64), _deconv(32), _deconv(16),
                         _deconv(3, "", "Tanh")]
            c.D_feat = [_fc(64), _fc(2, "")]
            c.max_steps = 2000
            c.log_every = 50
            c.checkpoint_every = 500
        if preset == "uda_cpu":
            # The CPU preset of the digits benchmark (--networks=cpu; docs/quality.md D1):
            # deviations from uda_example.yaml: uda_small's widths (z 64, not 2048), lr 3e-4
            # (not 1e-4: 1e-4 is far from converged in a CPU-length run), 20,000 steps (not
            # 500,000; about 12 minutes on 2 cores). Losses, weights, batch 16 per domain and the procedure are the reference's.
            c.lr = 3e-4
            c.max_steps = 20000
            c.log_every = 100
            c.checkpoint_every = 1000
    else:
        raise ValueError(f"unknown ufdn preset {preset!r}; expected digits, face, uda, "
                         "uda_small, uda_cpu or folder")
    return c
