"""PyTorch re-expressions of the reference implementations, for parity tests and benchmarks.

`build_reference_step(config, device, dtype)` returns the reference's training step for
the method named by `config.method` as a callable `step(*images)`: one NCHW tensor per domain
of the method's `data_spec`, in its order (CycleGAN, UNIT: `step(real_A, real_B)`) on
`device`); `unpaired.benchmark` times it against our jitted `train_step`. A method plugs in
by adding a builder to `REFERENCE_STEPS`; the benchmark itself never changes.

An optional subpackage: its builders need torch (the `test` extra,
`pip install -e .[test]`), imported only inside them, so importing this package is free
and the rest of `unpaired` never needs torch. Tests import the re-expressions from here.
"""

from __future__ import annotations

from typing import Any, Callable

StepFn = Callable[..., Any]


def _cyclegan_step(config, device: str, dtype, compile: bool = False) -> StepFn:
    """`CycleGANReference.optimize_parameters` on freshly initialised reference networks.

    Networks follow `config` (netG, netD, ngf, ndf, n_layers_D, norm, no_dropout,
    init_gain, init_type, input_nc/output_nc), the optimisers and losses its lr, beta1, lambdas,
    gan_mode and pool_size. `dtype=torch.bfloat16` runs the step under
    `torch.autocast(device, torch.bfloat16)` (parameters and optimiser stay float32, as in
    our bf16 mode). `compile=True` wraps each network in `torch.compile` (the optimisers
    and the Python image pool stay eager, as they are in the reference). Like the
    reference's CycleGAN, it never adds a WGAN-GP gradient penalty.
    """
    import torch

    from unpaired.torch_reference import cyclegan as ref

    def generator(in_nc: int, out_nc: int):
        return ref.define_G(in_nc, out_nc, config.ngf, config.netG, config.norm,
                            use_dropout=not config.no_dropout)

    def discriminator(in_nc: int):
        return ref.define_D(in_nc, config.ndf, config.netD, config.n_layers_D, config.norm)

    nets = {
        "G_A": generator(config.input_nc, config.output_nc),
        "G_B": generator(config.output_nc, config.input_nc),
        "D_A": discriminator(config.output_nc),
        "D_B": discriminator(config.input_nc),
    }
    for name, net in nets.items():
        ref.init_weights(net, config.init_gain, init_type=config.get("init_type", "normal"))
        nets[name] = net.to(device).train()
    if compile:
        nets = {name: torch.compile(net) for name, net in nets.items()}
    model = ref.CycleGANReference(
        nets["G_A"], nets["G_B"], nets["D_A"], nets["D_B"],
        lr=config.lr, beta1=config.beta1, lambda_A=config.lambda_A, lambda_B=config.lambda_B,
        lambda_identity=config.lambda_identity, gan_mode=config.gan_mode,
        pool_size=config.pool_size, n_epochs=config.n_epochs,
        n_epochs_decay=config.n_epochs_decay, epoch_count=config.epoch_count,
    )
    autocast = dtype is not None and dtype != torch.float32

    def step(real_A, real_B):
        with torch.autocast(device_type=device, dtype=dtype, enabled=autocast):
            return model.optimize_parameters(real_A, real_B)

    step.model = model
    return step


def _unit_step(config, device: str, dtype, compile: bool = False) -> StepFn:
    """One iteration of UNIT master's train.py (lr step, `dis_update`, `gen_update`) on fresh
    reference networks built from `config` (gen_*/dis_* keys, loss weights, Adam, StepLR).

    `dtype=torch.bfloat16` runs under autocast; `compile=True` compiles each network.
    `config.arch='version_02'` gives COCOGANTrainer's iteration (dis_update, gen_update) on
    COCOResGen2 + COCOSharedDis; with vgg_w > 0 the frozen VGG16 is read from
    config.vgg_model_path. The master networks with bolted-on sharing (gen_shared_blocks,
    dis_shared_layers) have no reference step.
    """
    import torch

    from unpaired.torch_reference import unit as ref

    autocast = dtype is not None and dtype != torch.float32
    if config.get("arch", "master") == "version_02":
        from unpaired.torch_reference import unit_v02

        nets = {k: v.to(device).train() for k, v in unit_v02.build_unit_v02(config).items()}
        hp = {k: config[k] for k in ("gan_w", "recon_x_w", "recon_kl_w", "recon_x_cyc_w",
                                     "recon_kl_cyc_w", "lr", "beta1", "beta2", "weight_decay")}
        model = unit_v02.COCOGANReference(nets, hp)
        if compile:
            model.gen, model.dis = torch.compile(model.gen), torch.compile(model.dis)

        def v02_step(real_A, real_B):
            with torch.autocast(device_type=device, dtype=dtype, enabled=autocast):
                return model.step(real_A, real_B)

        v02_step.model = model
        return v02_step
    if config.get("gen_shared_blocks", 0) or config.get("dis_shared_layers", 0):
        raise NotImplementedError("the UNIT master reference has no shared layers: set "
                                  "config.gen_shared_blocks=0 and config.dis_shared_layers=0")
    nets = ref.build_unit(config.input_dim_a, config.input_dim_b, config.gen_dim,
                          config.gen_n_downsample, config.gen_n_res, config.dis_dim,
                          config.dis_n_layer, config.dis_num_scales, config.gen_pad_type)
    nets = {name: net.to(device).train() for name, net in nets.items()}
    hp = {k: config[k] for k in ("gan_w", "recon_x_w", "recon_kl_w", "recon_x_cyc_w",
                                 "recon_kl_cyc_w", "lr", "beta1", "beta2", "weight_decay",
                                 "step_size", "gamma")}
    vgg = None
    if config.get("vgg_w", 0) > 0:
        hp["vgg_w"] = config.vgg_w
        vgg = _torch_vgg(config.vgg_model_path).to(device)
    model = ref.UNITReference(nets, hp, vgg=vgg)
    if compile:
        for name in ("gen_a", "gen_b", "dis_a", "dis_b"):
            setattr(model, name, torch.compile(getattr(model, name)))

    def step(real_A, real_B):
        with torch.autocast(device_type=device, dtype=dtype, enabled=autocast):
            return model.step(real_A, real_B)

    step.model = model
    return step


def _torch_vgg(path: str):
    """The frozen reference Vgg16 with the weights `unpaired.nets.vgg.load_vgg16` reads."""
    import numpy as np
    import torch

    from unpaired.nets.vgg import load_vgg16, widths_of
    from unpaired.torch_reference import vgg as ref_vgg

    params = load_vgg16(path)
    net = ref_vgg.Vgg16(widths_of(params))
    net.load_state_dict({f"{name}.{leaf}": torch.from_numpy(np.ascontiguousarray(
        p["kernel"].transpose(3, 2, 0, 1) if leaf == "weight" else p["bias"]))
        for name, p in params.items() for leaf in ("weight", "bias")})
    return ref_vgg.frozen(net)


# Builders by `config.method`: (config, device, dtype, compile=False) -> step(*images).
REFERENCE_STEPS: dict[str, Callable[..., StepFn]] = {
    "cyclegan": _cyclegan_step,
    "unit": _unit_step,
}


def build_reference_step(config, device: str = "cpu", dtype=None, compile: bool = False) -> StepFn:
    """The reference training step for `config.method` on `device` (see `REFERENCE_STEPS`)."""
    if config.method not in REFERENCE_STEPS:
        raise NotImplementedError(
            f"no PyTorch reference step for method {config.method!r}; "
            f"known: {sorted(REFERENCE_STEPS)}"
        )
    return REFERENCE_STEPS[config.method](config, device, dtype, compile=compile)
