"""UNIT configs: `get_config(preset)`, e.g. `--config=configs/unit.py:folder`.

Keys follow the reference's yaml (mingyuliutw/UNIT master `configs/unit_*_folder.yaml`):
`gen.dim` is `gen_dim`, `dis.n_layer` is `dis_n_layer`, and so on. Presets:
  folder  the official folder configs' architecture and weights (dim 64, n_downsample 2,
          n_res 4, reflect padding, 3 scales, LSGAN, RGB 256, batch 1, 1M iterations);
          give the data as --config.data.dataroot=<folder with trainA/trainB>.
  digits  built-in, offline: handwritten (A) to printed (B) digits, 32x32 grayscale,
          tiny widths, a few hundred steps in minutes on a CPU.
"""

import ml_collections

from unpaired.data.config import data_config


def get_config(preset: str = "folder") -> ml_collections.ConfigDict:
    """The resolved config for `preset`; every field can be overridden as --config.x=y."""
    c = ml_collections.ConfigDict()
    c.method = "unit"
    c.seed = 0
    # Networks (reference: input_dim_a/b, gen: {dim, activ, n_downsample, n_res, pad_type},
    # dis: {dim, norm, activ, n_layer, gan_type, num_scales, pad_type}).
    c.input_dim_a = 3
    c.input_dim_b = 3
    c.gen_dim = 64
    c.gen_activ = "relu"          # relu | lrelu
    c.gen_n_downsample = 2
    c.gen_n_res = 4
    c.gen_pad_type = "reflect"    # reflect | replicate | zero
    c.dis_dim = 64
    c.dis_norm = "none"           # none | in
    c.dis_activ = "lrelu"
    c.dis_n_layer = 4
    c.dis_num_scales = 3
    c.dis_pad_type = "reflect"
    c.gan_type = "lsgan"          # LSGAN without the 1/2, summed over scales
    # The seed's shared-weight form (NIPS-2017 version_02): 0 and 0 is the reference master.
    c.gen_shared_blocks = 0       # last residual blocks of the encoders / first of the decoders, shared
    c.dis_shared_layers = 0       # last conv blocks (+ the 1x1 conv) of every D scale, shared
    # Loss weights (reference master yaml).
    c.gan_w = 1.0
    c.recon_x_w = 10.0
    c.recon_h_w = 0.0             # in the reference's yaml but never read by UNIT_Trainer: must be 0
    c.recon_kl_w = 0.01
    c.recon_x_cyc_w = 10.0
    c.recon_kl_cyc_w = 0.01
    c.vgg_w = 0.0                 # VGG perceptual loss: not implemented yet, must be 0
    # Optimisation: Adam with coupled L2 weight decay, StepLR stepped before each update.
    c.lr = 1e-4
    c.beta1 = 0.5
    c.beta2 = 0.999
    c.weight_decay = 1e-4
    c.lr_policy = "step"          # step | constant
    c.step_size = 100000
    c.gamma = 0.5
    c.batch_size = 1
    # The generic loop's epoch keys: UNIT counts iterations (max_steps); one epoch is the
    # shorter domain, as the reference's zip of the two loaders.
    c.n_epochs = 1
    c.n_epochs_decay = 0
    c.epoch_count = 1
    # Execution.
    c.dtype = "float32"           # float32 (parity) | bfloat16
    c.max_steps = 1000000         # the reference's max_iter
    c.log_every = 10
    c.sample_every = 10000
    c.checkpoint_every = 10000
    c.keep_checkpoints = 3
    c.init_from = ""              # a workdir, or an official gen_XXXXXXXX.pt / dis_XXXXXXXX.pt
    c.init_networks = ""          # e.g. gen_a,gen_b (from a gen file) or dis_a,dis_b
    c.verify_checkpoints = True
    c.bn_sync = True  # BatchNorm statistics over the global batch; False: per device (docs/scaling.md)
    c.data = data_config()
    c.data.load_size = 256        # new_size: shorter side resized to 256, random 256 crop, flip
    c.data.crop_size = 256

    if preset == "folder":
        pass
    elif preset == "digits":
        c.input_dim_a = c.input_dim_b = 1
        c.gen_dim = 8
        c.gen_n_res = 2
        c.dis_dim = 8
        c.dis_n_layer = 3
        c.batch_size = 8
        c.lr = 2e-4
        c.max_steps = 300
        c.step_size = 200
        c.log_every = 25
        c.sample_every = 100
        c.checkpoint_every = 100
        c.data = data_config("digits")
        c.data.image_size = 32
        c.data.preprocess = "none"
        c.data.load_size = 32
        c.data.crop_size = 32
        c.data.no_flip = True
        c.data.num_workers = 2
    else:
        raise ValueError(f"unknown unit preset {preset!r}; expected folder or digits")
    return c
