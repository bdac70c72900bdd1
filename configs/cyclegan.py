"""CycleGAN configs: `get_config(preset)`, e.g. `--config=configs/cyclegan.py:horse2zebra`.

Defaults are the reference's (`options/train_options.py`, `cycle_gan_model.py`); option
names follow it so `--config.lambda_identity=0` means what a reference user expects.
Presets:
  digits       the built-in offline default: scikit-learn's handwritten digits (A) to
               digits printed from Pillow's bundled font (B), 32x32 grayscale, small nets.
  horse2zebra  the reference setup on horse2zebra (trainA/...) as `python -m launch.fetch
               horse2zebra` puts it in the data root (`unpaired.data.cache`).
  folder       reference hyperparameters on any folder dataset (`--config.data.dataroot`).
  mnist2usps   MNIST (A) to USPS (B) from the data root's IDX files (`python -m launch.fetch
               mnist usps`), 32x32 grayscale; usps2mnist the reverse (USPS is A).
  mnist2usps_cpu / usps2mnist_cpu  the same data narrowed for a 2-core CPU run of the digits
               benchmark (--networks=cpu; deviations written below).
"""

import ml_collections

from unpaired.data import cache
from unpaired.data.config import data_config
from unpaired.eval.config import add_eval_keys


def _data(source: str = "folder") -> ml_collections.ConfigDict:
    """The shared data block (`unpaired.data.config`) with the reference's defaults."""
    return data_config(source)


def _grayscale_digits(c: ml_collections.ConfigDict, source: str, width: int) -> None:
    """The digit presets' shared setup: 1-channel 32x32 images, unflipped, resnet_6blocks."""
    c.input_nc = c.output_nc = 1
    c.netG = "resnet_6blocks"
    c.ngf = c.ndf = width
    c.data = _data(source)
    c.data.image_size = 32
    c.data.preprocess = "none"
    c.data.load_size = 32
    c.data.crop_size = 32
    c.data.no_flip = True   # digits are not mirror-symmetric


def get_config(preset: str = "digits") -> ml_collections.ConfigDict:
    """The resolved config for `preset`; every field can be overridden as --config.x=y."""
    c = ml_collections.ConfigDict()
    c.method = "cyclegan"
    c.seed = 0
    # Networks (reference: --netG --netD --n_layers_D --norm --ngf --ndf --no_dropout --init_type --init_gain).
    c.input_nc = 3
    c.output_nc = 3
    c.netG = "resnet_9blocks"
    c.netD = "basic"
    c.n_layers_D = 3
    c.norm = "instance"
    c.ngf = 64
    c.ndf = 64
    c.no_dropout = True
    c.init_gain = 0.02
    c.init_type = "normal"      # normal | xavier | kaiming | orthogonal (reference --init_type)
    # Losses.
    c.gan_mode = "lsgan"        # lsgan | vanilla | wgangp | hinge
    c.lambda_A = 10.0
    c.lambda_B = 10.0
    c.lambda_identity = 0.5
    c.gp_weight = 10.0          # WGAN-GP penalty; used only with gan_mode=wgangp (the reference has none: set 0)
    c.pool_size = 50
    # Optimisation (two Adams, G and D; per-epoch schedule of the current reference).
    c.lr = 2e-4
    c.beta1 = 0.5
    c.beta2 = 0.999
    c.lr_policy = "linear"      # linear | step | cosine | plateau | constant
    c.n_epochs = 100
    c.n_epochs_decay = 100
    c.epoch_count = 1
    c.lr_decay_iters = 50
    c.batch_size = 1
    # Execution.
    c.dtype = "float32"         # compute dtype: float32 (parity) | bfloat16 (params, optimizer, losses stay float32)
    c.remat = False             # recompute ResNet / U-Net skip blocks in the backward pass (less memory)
    c.fuse_passes = True        # one pass per network over real+fake / real_A+real_B (instance norm, no dropout)
    c.max_steps = -1            # stop after this many steps (-1: the epochs decide)
    c.log_every = 100           # fetch metrics from the device every k steps
    c.sample_every = 1000       # write an image grid every k steps
    c.checkpoint_every = 1000   # save the whole train state every k steps
    c.keep_checkpoints = 3
    # Staged training: networks of a fresh run taken from another run or a weight file.
    c.init_from = ""            # a workdir, its checkpoints/<step> folder, or a .pth of one network
    c.init_networks = ""        # comma-separated, ours=theirs to rename: e.g. G_A,D_A or G_A=G_B
    c.verify_checkpoints = True  # CRC-32 per array on save, checked on restore (off: huge states)
    add_eval_keys(c)           # eval_every (0: off) and the eval block (unpaired.eval)
    c.bn_sync = True  # BatchNorm statistics over the global batch; False: per device (docs/scaling.md)
    c.data = _data()

    if preset == "digits":
        _grayscale_digits(c, "digits", width=16)
        c.batch_size = 8
        c.pool_size = 50
        c.n_epochs = 2
        c.n_epochs_decay = 1
        c.log_every = 25
        c.sample_every = 100
        c.checkpoint_every = 100
        c.data.num_workers = 2
    elif preset.removesuffix("_cpu") in ("mnist2usps", "usps2mnist"):
        _grayscale_digits(c, "idx", width=32)
        c.batch_size = 16
        c.n_epochs = 10
        c.n_epochs_decay = 10
        c.data.idx_A, c.data.idx_B = cache.digits_train_pair(preset)
        if preset.endswith("_cpu"):
            # The digits benchmark's CPU preset (--networks=cpu; docs/quality.md CG1). Deviations
            # from the reference: ngf/ndf 16 (not 64), resnet_6blocks (its 32x32 choice),
            # batch 8 (not 1), 5 epochs (2 at lr, 3 decaying; 848 steps an epoch with 500 of
            # USPS held out): about 0.2 s a step on 2 cores, 14 minutes. Losses, their weights,
            # the image pool, Adam and the linear decay are the reference's.
            c.ngf = c.ndf = 16
            c.batch_size = 8
            c.n_epochs = 2
            c.n_epochs_decay = 3
            c.max_steps = 4240
            c.log_every = 50
    elif preset == "horse2zebra":
        c.data.dataroot = cache.cyclegan_folder("horse2zebra")
    elif preset == "folder":
        pass
    else:
        raise ValueError(
            f"unknown cyclegan preset {preset!r}; expected digits, mnist2usps, usps2mnist, horse2zebra, "
            "folder, mnist2usps_cpu or usps2mnist_cpu"
        )
    return c
