"""DTN configs: `get_config(preset)`, e.g. `--config=configs/dtn.py:digits_pretrain` then `:digits`.

Stage 1 presets (`*_pretrain`, method dtn_pretrain) train f as a classifier on the labelled
source domain; stage 2 presets (method dtn) train g and D with f taken from stage 1:
`--config.init_from=<stage-1 workdir>` (init_networks=f). Networks, widths and optimiser
are the TF reference's (yunjey/domain-transfer-network); loss weights the paper's.
Presets:
  digits / digits_pretrain          built-in offline digits: source printed (B, labelled),
                                    target handwritten (A), 32x32, narrow nets, CPU minutes.
  mnist2usps / mnist2usps_pretrain  the data root's IDX files (`python -m launch.fetch mnist
                                    usps`), the reference's widths.
  usps2mnist / usps2mnist_pretrain  the reverse direction.
  mnist2usps_cpu / usps2mnist_cpu   stage 2 narrowed for a 2-core CPU run of the digits
                                    benchmark (--networks=cpu; deviations written below).
  faces                             64x64 RGB folders (<dataroot>/trainA photos, trainB
                                    emoji), one more block in f, g and D, the paper's face
                                    weights (alpha 100, beta 1, gamma 0.05); no stage 1:
                                    f comes from a converted encoder (--config.init_from=
                                    a TF bundle prefix or a .pth state_dict with f's names).
"""

import ml_collections

from unpaired.data import cache
from unpaired.data.config import data_config
from unpaired.eval.config import add_eval_keys

PRESETS = ("digits", "mnist2usps", "usps2mnist", "faces")


def _data(source: str) -> ml_collections.ConfigDict:
    """The shared data block: 32x32 digits kept as they are (no crop, no flip)."""
    return data_config(source, preprocess="none", load_size=32, crop_size=32, no_flip=True,
                       num_workers=2)


def get_config(preset: str = "digits") -> ml_collections.ConfigDict:
    """The resolved config for `preset`; every field can be overridden as --config.x=y."""
    stage1 = preset.endswith("_pretrain")
    base = preset[: -len("_pretrain")] if stage1 else preset
    cpu = not stage1 and base in ("mnist2usps_cpu", "usps2mnist_cpu")
    base = base.removesuffix("_cpu") if cpu else base
    if preset == "faces_pretrain":
        raise ValueError("dtn preset 'faces' has no stage 1 (its folders have no labels): take f "
                         "from a converted face encoder with --config.init_from")
    if base not in PRESETS:
        raise ValueError(f"unknown dtn preset {preset!r}; expected one of "
                         f"{', '.join(p + s for p in PRESETS for s in ('', '_pretrain'))}, "
                         "mnist2usps_cpu, usps2mnist_cpu")
    c = ml_collections.ConfigDict()
    c.method = "dtn_pretrain" if stage1 else "dtn"
    c.seed = 0
    # Domains: batch keys of the data seam; the source needs labels in stage 1.
    c.source_domain = "B"
    c.target_domain = "A"
    c.input_nc = 1              # source channels (f repeats 1 channel to 3)
    c.output_nc = 1             # target channels (g's output)
    # Networks (reference widths: f 64-128-256 -> 128, g 512-256-128, D 128-256-512).
    c.f_arch = "code"           # f: "code" (stride-2 convs + BN + tanh) or "paper" (conv + max-pool)
    c.nf = 64
    c.feature_dim = 128
    c.num_classes = 10
    c.ngf = 128
    c.ndf = 128
    # Losses (stage 2): L_G = L_GANG + alpha L_CONST + beta L_TID + gamma L_TV.
    c.alpha = 15.0
    c.beta = 15.0
    c.gamma = 0.0
    c.tv_eps = 1e-8             # sqrt(dx^2 + dy^2 + tv_eps): finite TV gradient on flat pixels
    # Stage 2 objective: "paper" (ternary D, L_CONST trains g, f frozen, one g and one D
    # update per step) or "code" (yunjey's TF code: binary D, five TF-Adam train ops per
    # step; alpha weighs f_src's L_CONST, beta g_trg's identity MSE; gamma must be 0).
    c.variant = "paper"
    c.d_src_updates = 1         # code variant, per step: d_src runs, then
    c.g_src_updates = 6         # g_src runs, then f_src once if due, then
    c.d_trg_updates = 2         # d_trg runs, then
    c.g_trg_updates = 4         # g_trg runs
    c.f_interval = 15           # f_src runs when (step mod steps_per_epoch) % interval == 0;
    c.f_interval_late = 30      # the interval once step > f_interval_switch
    c.f_interval_switch = 1600
    # Optimisation: Adam(0.0003) with TF defaults, constant rate, as the reference.
    c.lr = 3e-4
    c.beta1 = 0.9
    c.beta2 = 0.999
    c.adam_eps = 1e-8
    c.lr_schedule = "constant"  # stage 1: "constant" (the reference) or "cosine" (to 0 at the end)
    c.batch_size = 100
    c.n_epochs = 10             # epochs at lr (the loop's plan; max_steps overrides)
    c.n_epochs_decay = 0        # DTN has no decay; the loop's generic key
    c.epoch_count = 1
    # Execution.
    c.dtype = "float32"
    c.max_steps = -1
    c.log_every = 100
    c.sample_every = 500
    c.checkpoint_every = 1000
    c.keep_checkpoints = 3
    c.init_from = ""            # stage 2: the stage-1 workdir or a TF svhn_model-<step> (required)
    c.init_networks = "" if stage1 else "f"
    c.verify_checkpoints = True
    add_eval_keys(c)           # eval_every (0: off) and the eval block (unpaired.eval)
    c.bn_sync = True  # BatchNorm statistics over the global batch; False: per device (docs/scaling.md)
    # Stage 2's translation accuracy at the end: a dtn_pretrain workdir trained on the
    # TARGET domain (e.g. preset digits_pretrain with --config.source_domain=A); "" skips it.
    c.eval_classifier = ""
    # Stage 1 only: shift each training image by up to this many pixels (edge-padded, a fresh
    # random shift per image and step); 0 is the reference (no augmentation).
    c.augment_shift = 0
    if base == "digits":
        c.data = _data("digits")
        c.nf, c.feature_dim, c.ngf, c.ndf = 16, 32, 16, 16
        c.batch_size = 32
        c.n_epochs = 5 if stage1 else 20
        c.log_every = 25
        c.sample_every = 100
        c.checkpoint_every = 100
    elif base == "faces":
        c.data = data_config("folder", preprocess="resize_and_crop", load_size=64, crop_size=64,
                             no_flip=True, num_workers=2)
        c.source_domain, c.target_domain = "A", "B"   # trainA photos -> trainB emoji
        c.input_nc = c.output_nc = 3
        c.nf, c.ngf, c.ndf = 64, 64, 64
        c.alpha, c.beta, c.gamma = 100.0, 1.0, 0.05
        c.batch_size = 32
    else:
        c.data = _data("idx")
        c.source_domain, c.target_domain = "A", "B"
        c.data.idx_A, c.data.idx_B = cache.digits_train_pair(base)
        c.data.image_resize = "lanczos"  # the reference: PIL Image.ANTIALIAS (Lanczos) to 32x32
    if cpu:
        # The digits benchmark's CPU preset (--networks=cpu; docs/quality.md). Deviations from
        # the reference: g's decoder and D 32 wide (not 128), batch 32 (not 100), 3,000 steps
        # (about 0.1 s each on 2 cores: 4-5 minutes). f (stage 1), the losses, their weights and Adam are
        # the reference's.
        c.ngf = c.ndf = 32
        c.batch_size = 32
        c.max_steps = 3000
    return c
