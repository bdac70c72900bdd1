"""UNIT configs: `get_config(preset)`, e.g. `--config=configs/unit.py:folder`.

Keys follow the reference's yaml (mingyuliutw/UNIT master `configs/unit_*_folder.yaml`):
`gen.dim` is `gen_dim`, `dis.n_layer` is `dis_n_layer`, and so on. Presets:
  folder  the official folder configs' architecture and weights (dim 64, n_downsample 2,
          n_res 4, reflect padding, 3 scales, LSGAN, RGB 256, batch 1, 1M iterations);
          give the data as --config.data.dataroot=<folder with trainA/trainB>.
  digits  built-in, offline: handwritten (A) to printed (B) digits, 32x32 grayscale,
          tiny widths, 1,000 steps in about 3 minutes on a 2-core CPU.
  mnist2usps, usps2mnist  the digit domain-adaptation model (method unit_da, version_02
          CoVAE32x32 + CoDis32x32) on the fetched MNIST/USPS (`python -m launch.fetch mnist
          usps`): source A labelled, target B; the
          target test accuracy is printed and saved at the end (`da_config`).
  mnist2usps_cpu, usps2mnist_cpu  the same model narrowed for a 2-core CPU run of the
          digits benchmark (--networks=cpu; deviations written in `da_config`).
  mnist2usps_master_cpu, usps2mnist_master_cpu  the master translation model (method
          unit) on MNIST <-> USPS, narrowed for the digits benchmark's 2-core CPU run
          (USPS -> MNIST with the seed's shared high-level layers; --networks=cpu; deviations
          written below).
  folder_v02  the NIPS-2017 image model (arch version_02: COCOResGen2 + COCOSharedDis,
          shared layers, blondhair.yaml's weights), 128 crops from --config.data.dataroot.
  digits_v02  the same model at tiny widths on the built-in digits, for a CPU.
"""

import ml_collections

from unpaired.data import cache
from unpaired.data.config import data_config
from configs.common import add_run_keys


def get_config(preset: str = "folder") -> ml_collections.ConfigDict:
    """The resolved config for `preset`; every field can be overridden as --config.x=y."""
    if preset in DA_PRESETS or preset.removesuffix("_cpu") in DA_PRESETS:
        return da_config(preset)
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
    # The NIPS-2017 image model (version_02 `exps/unit/blondhair.yaml`), used when
    # arch='version_02': one `gen` (COCOResGen2 | COCOResGen; ch is gen_dim) whose last
    # encoder / first decoder residual blocks are shared, one `dis` (COCOSharedDis; ch is
    # dis_dim) whose high-level layers are shared; the gen_*/dis_* keys above are then unused
    # except gen_dim, dis_dim. Its loss weights are the master keys below (see preset *_v02).
    c.arch = "master"             # master | version_02
    c.gen_name = "COCOResGen2"
    c.gen_n_enc_front_blk = 3
    c.gen_n_enc_res_blk = 3
    c.gen_n_enc_shared_blk = 1    # shared encoder residual blocks (before the noise)
    c.gen_n_gen_shared_blk = 1    # shared decoder residual blocks
    c.gen_n_gen_res_blk = 3
    c.gen_n_gen_front_blk = 3
    c.gen_res_dropout_ratio = 0.0  # the street-scene yamls' 0.5 is not implemented: must be 0
    c.dis_name = "COCOSharedDis"
    c.dis_n_front_layer = 2       # per-domain layers (k7 s2, then k3 s2)
    c.dis_n_shared_layer = 4      # shared k3 s2 layers (+ the 1x1 conv)
    # Loss weights (reference master yaml).
    c.gan_w = 1.0
    c.recon_x_w = 10.0
    c.recon_h_w = 0.0             # in the reference's yaml but never read by UNIT_Trainer: must be 0
    c.recon_kl_w = 0.01
    c.recon_x_cyc_w = 10.0
    c.recon_kl_cyc_w = 0.01
    c.vgg_w = 0.0                 # VGG perceptual loss weight (gta2city yamls: 1); needs:
    c.vgg_model_path = ""         # VGG16 state_dict file (reference vgg16.weight / torchvision), or
                                  # the reference's vgg_model_path folder holding models/vgg16.weight
    # Optimisation: Adam with coupled L2 weight decay, StepLR stepped before each update.
    c.lr = 1e-4
    c.beta1 = 0.5
    c.beta2 = 0.999
    c.weight_decay = 1e-4
    c.lr_policy = "step"          # step | constant
    c.step_size = 100000
    c.gamma = 0.5
    c.batch_size = 1
    # UNIT counts iterations (max_steps, the reference's max_iter); one epoch is the shorter
    # domain, as the reference's zip of the two loaders. init_from: a workdir, or an official
    # gen_XXXXXXXX.pt / dis_XXXXXXXX.pt with init_networks e.g. gen_a,gen_b or dis_a,dis_b.
    add_run_keys(c, max_steps=1000000, log_every=10, sample_every=10000, checkpoint_every=10000)
    c.data = data_config()
    c.data.load_size = 256        # new_size: shorter side resized to 256, random 256 crop, flip
    c.data.crop_size = 256

    if preset == "folder":
        pass
    elif preset == "digits":
        _digits_run(c)
        c.gen_dim = 8
        c.gen_n_res = 2
        c.dis_dim = 8
        c.dis_n_layer = 3
        # 1,000 steps at a constant 1e-3 (not 300 steps at 2e-4 halved at step 200): the
        # translations become digit-shaped (docs/quality.md UM1-UM3).
        c.lr = 1e-3
        c.lr_policy = "constant"
        c.max_steps = 1000
    elif preset in MASTER_CPU_PRESETS:
        # The digits benchmark's CPU preset for the master model (--networks=cpu; docs/
        # quality.md UC1). Deviations from the folder yaml: grayscale 32x32 IDX digits,
        # gen/dis dim 16 (not 64), 2 residual blocks (not 4), 3-layer D (not 4), batch 8
        # (not 1), lr 5e-4 halved every 1,500 steps over 4,000 (not 1e-4 halved every
        # 100,000 of 1M). Losses, their weights, Adam and the networks' form are the master's.
        # USPS -> MNIST adds the seed's shared high-level layers (the master code shares none):
        # the encoders' last and the decoders' first residual block, and D's last conv block +
        # 1x1 conv. Without them it loses the digits' class (0.508); MNIST -> USPS does better
        # without them (0.853 against 0.791; docs/quality.md UC1, UC3).
        c.input_dim_a = c.input_dim_b = 1
        c.gen_dim, c.gen_n_res, c.dis_dim, c.dis_n_layer = 16, 2, 16, 3
        if preset == "usps2mnist_master_cpu":
            c.gen_shared_blocks, c.dis_shared_layers = 1, 1
        c.batch_size = 8
        c.lr, c.step_size, c.gamma = 5e-4, 1500, 0.5
        c.max_steps, c.log_every, c.sample_every, c.checkpoint_every = 4000, 50, 1000, 1000
        c.data = _idx_digits_data(preset)
    elif preset in ("folder_v02", "digits_v02"):
        # version_02 blondhair.yaml: COCOResGen2 + COCOSharedDis, sigmoid-BCE GAN,
        # gan_w 10 (lambda0), ll_direct/ll_cycle 100 (lambda2, lambda4), kl 0.1 (lambda1, lambda3),
        # Adam(1e-4, (0.5, 0.999), wd 1e-4) with no lr decay, batch 1, 128 crops.
        c.arch = "version_02"
        c.gan_type = "nsgan"
        c.gan_w, c.recon_x_w, c.recon_x_cyc_w = 10.0, 100.0, 100.0
        c.recon_kl_w, c.recon_kl_cyc_w = 0.1, 0.1
        c.lr_policy = "constant"
        c.max_steps = 2000000
        c.data.load_size = c.data.crop_size = 128
        if preset == "digits_v02":
            _digits_run(c)
            c.gen_dim, c.dis_dim = 8, 8
            c.gen_n_enc_res_blk = c.gen_n_gen_res_blk = 1
            c.dis_n_shared_layer = 2
    else:
        raise ValueError(f"unknown unit preset {preset!r}; expected folder, digits, folder_v02, "
                         f"digits_v02, {', '.join(DA_PRESETS)} (or one of them + _cpu), "
                         f"{', '.join(MASTER_CPU_PRESETS)}")
    return c


def _digits_run(c: ml_collections.ConfigDict) -> None:
    """The digits presets' grayscale built-in digits and short CPU run (300 steps of 8)."""
    c.input_dim_a = c.input_dim_b = 1
    c.batch_size = 8
    c.max_steps = 300
    c.log_every = 25
    c.sample_every = 100
    c.checkpoint_every = 100
    c.data = _digits_data()


def _digits_data() -> ml_collections.ConfigDict:
    """The built-in digits at 32x32 grayscale, as the test split is read (no resize, no flip)."""
    data = data_config("digits")
    data.image_size = 32
    data.preprocess = "none"
    data.load_size = data.crop_size = 32
    data.no_flip = True
    data.num_workers = 2
    return data


DA_PRESETS = ("mnist2usps", "usps2mnist")


def _idx_digits_data(preset: str) -> ml_collections.ConfigDict:
    """The MNIST <-> USPS presets' data (DA and master): the data root's IDX files, A the
    source `preset` starts with, unflipped 32x32 grayscale."""
    data = data_config("idx", preprocess="none", load_size=32, crop_size=32, no_flip=True,
                       num_workers=2)
    data.image_size = 32          # MNIST 28 and USPS 16 are resized (bicubic) to 32
    data.idx_A, data.idx_B = cache.digits_train_pair(preset)
    return data
MASTER_CPU_PRESETS = ("mnist2usps_master_cpu", "usps2mnist_master_cpu")


def da_config(preset: str) -> ml_collections.ConfigDict:
    """The digit DA presets (method unit_da): version_02 `svhn2mnist.yaml` networks, loss
    weights and Adam, on MNIST <-> USPS from the data root (`unpaired.data.cache`) at 32x32 (A source, B target)."""
    c = ml_collections.ConfigDict()
    c.method = "unit_da"
    c.seed = 0
    c.input_dim_a = 1             # image channels (the generator adds the 2 xy channels)
    c.input_dim_b = 1
    c.gen_ch = 96                 # CoVAE32x32 base width (version_02 head; 64 before 2034e5f)
    c.dis_ch = 64                 # CoDis32x32 base width
    # Loss weights (yaml names).
    c.gan_w = 1.0
    c.cls_w = 10.0                # classifier CE on the labelled source (D update)
    c.feature_w = 1e-4            # feature matching of the shared D trunk (D update)
    c.kl_normalized_direct_w = 1e-4
    c.ll_normalized_direct_w = 1e-3
    # Adam as COCOGANDAContextTrainer: lr 2e-4, betas (0.5, 0.999), coupled L2 5e-4, constant.
    c.lr = 2e-4
    c.beta1 = 0.5
    c.beta2 = 0.999
    c.weight_decay = 5e-4
    c.batch_size = 64             # per domain
    c.test_batch_size = 100       # target test-set evaluation at the end
    # max_steps: the yaml's max_iterations.
    add_run_keys(c, max_steps=200000, log_every=10, sample_every=500, checkpoint_every=1000)
    c.data = _idx_digits_data(preset)
    if preset.endswith("_cpu"):
        # The digits benchmark's CPU preset (--networks=cpu; docs/quality.md UD2). Deviations
        # from svhn2mnist.yaml: base widths 16/16 (not 96/64), batch 32 per domain (not 64),
        # 3,000 steps (not 200,000): about 0.4 s a step on 2 cores. Losses, their weights,
        # Adam and the networks' structure are the reference's.
        c.gen_ch = c.dis_ch = 16
        c.batch_size = 32
        c.max_steps = 3000
        c.log_every = 50
    return c
