"""PyTorch re-expressions of the reference implementations, for parity tests and benchmarks.

`build_reference_step(config, device, dtype)` returns the reference's training step for
the method named by `config.method` as a callable `step(*images)`: one NCHW tensor per domain
of the method's `data_spec`, in its order (CycleGAN, UNIT: `step(real_A, real_B)`; UFDN: one
per config.data.domains, either procedure) on `device`; `unpaired.benchmarks.step` times it
against our jitted `train_step`. A method plugs in by adding a builder to
`REFERENCE_STEPS`; the benchmark itself never changes.

An optional subpackage: its builders need torch (the `test` extra,
`pip install -e .[test]`), imported only inside them, so importing this package is free
and the rest of `unpaired` never needs torch. Tests import the re-expressions from here.
"""

from __future__ import annotations

from typing import Any, Callable

StepFn = Callable[..., Any]


def autocast(device: str, dtype):
    """`torch.autocast` on `device`, on for a non-float32 `dtype` (parameters stay float32)."""
    import torch

    return torch.autocast(device_type=device, dtype=dtype,
                          enabled=dtype is not None and dtype != torch.float32)


def _autocast_step(run: Callable[..., Any], model: Any, device: str, dtype) -> StepFn:
    """`step(*images)`: `run(*images)` under `autocast`, with `step.model` for the tests."""

    def step(*images):
        with autocast(device, dtype):
            return run(*images)

    step.model = model
    return step


def build_from(table: dict[str, Callable[..., Any]], what: str, config, device: str, dtype,
               compile: bool) -> Any:
    """`table[config.method](config, device, dtype, compile)`; NotImplementedError naming the
    methods `table` knows when it has no `what` for this one."""
    if config.method not in table:
        raise NotImplementedError(
            f"no PyTorch reference {what} for method {config.method!r}; known: {sorted(table)}")
    return table[config.method](config, device, dtype, compile=compile)


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
    return _autocast_step(model.optimize_parameters, model, device, dtype)


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

    if config.get("arch", "master") == "version_02":
        from unpaired.torch_reference import unit_v02

        nets = {k: v.to(device).train() for k, v in unit_v02.build_unit_v02(config).items()}
        hp = {k: config[k] for k in ("gan_w", "recon_x_w", "recon_kl_w", "recon_x_cyc_w",
                                     "recon_kl_cyc_w", "lr", "beta1", "beta2", "weight_decay")}
        model = unit_v02.COCOGANReference(nets, hp)
        if compile:
            model.gen, model.dis = torch.compile(model.gen), torch.compile(model.dis)
        return _autocast_step(model.step, model, device, dtype)
    nets = {name: net.to(device).train() for name, net in ref.build_unit_master(config).items()}
    hp = {k: config[k] for k in ("gan_w", "recon_x_w", "recon_kl_w", "recon_x_cyc_w",
                                 "recon_kl_cyc_w", "lr", "beta1", "beta2", "weight_decay",
                                 "step_size", "gamma")}
    vgg = None
    if config.get("vgg_w", 0) > 0:
        hp["vgg_w"] = config.vgg_w
        vgg = _torch_vgg(config.vgg_model_path).to(device)
    model = ref.UNITReference(nets, hp, vgg=vgg)
    if compile:  # the trainer calls encode/decode/calc_*_loss, never the wrappers' forward,
        for gen in (model.gen_a, model.gen_b):  # so compile the modules those call
            gen.enc, gen.dec = torch.compile(gen.enc), torch.compile(gen.dec)
        for dis in (model.dis_a, model.dis_b):
            dis.cnns = torch.nn.ModuleList([torch.compile(cnn) for cnn in dis.cnns])
    return _autocast_step(model.step, model, device, dtype)


def _ufdn_step(config, device: str, dtype, compile: bool = False) -> StepFn:
    """One iteration of the official `train_face.py` (procedure translation) or
    `train_uda.py` (procedure uda) on fresh reference networks built from `config`'s layer
    lists, with its lambdas ramps, lr, betas and objective.

    `step(*images)` takes one NCHW batch per domain, in `config.data.domains` order; the
    reference's draws (every eps, the GP's alpha) are made with torch on `device` inside
    the step, translation targets cycle with the step count as in the reference, and the
    uda source labels are a fixed random draw (target labels -1). `dtype=torch.bfloat16`
    runs under autocast; `compile=True` compiles each network but D_pix (the loop stays eager).
    """
    import torch

    from unpaired.torch_reference import ufdn as ref

    domains = [d.strip() for d in str(config.data.domains).split(",") if d.strip()]
    n, size = len(domains), int(config.data.image_size)
    z_dim, depth = int(config.encoder[-1][1]), int(config.img_depth)
    uda = config.procedure == "uda"
    nets = {"vae": ref.UFDN(config.encoder, config.decoder, n, depth),
            "D_feat": ref.Discriminator(config.D_feat, z_dim)}
    if uda:
        nets["D_digit"] = ref.Discriminator(config.D_digit, z_dim)
    else:
        nets["D_pix"] = ref.Discriminator(config.D_pix, depth, size)
    nets = {k: v.to(device).train() for k, v in nets.items()}
    kwargs = dict(lambdas=config.lambdas.to_dict(), lr=config.lr,
                  betas=(config.beta1, config.beta2), objective=config.get("objective", "code"))
    if uda:
        model = ref.UFDNUdaReference(nets["vae"], nets["D_feat"], nets["D_digit"], **kwargs)
    else:
        model = ref.UFDNFaceReference(nets["vae"], nets["D_feat"], nets["D_pix"], **kwargs)
    if compile:
        # D_pix stays eager: its gradient penalty differentiates D_pix's graph twice
        # (create_graph=True), which AOTAutograd cannot ("does not currently support double
        # backward"); the compile-mode figure is thus for the step with D_pix uncompiled.
        for attr in ("vae", "d_feat", "d_digit"):
            if hasattr(model, attr):
                setattr(model, attr, torch.compile(getattr(model, attr)))
    eye = torch.eye(n, device=device)
    names = ("eps_dv", "eps_rec", "eps_feat", "eps_digit") if uda else (
        "eps_dv", "eps_dx", "eps_rec", "eps_feat", "eps_pix", "eps_unused")
    gen = torch.Generator().manual_seed(0)
    counter = {"step": 0, "labels": None}

    def step(*images):
        batch = images[0].shape[0]
        x = torch.cat(images)
        owner = torch.arange(n, device=device).repeat_interleave(batch)
        code = eye[owner]
        noise = {k: torch.randn(x.shape[0], z_dim, device=device) for k in names}
        with autocast(device, dtype):
            if uda:
                if counter["labels"] is None:
                    source = torch.randint(0, 10, (batch,), generator=gen)
                    counter["labels"] = torch.cat(
                        [source, torch.full((x.shape[0] - batch,), -1)]).to(device)
                if config.get("data_augment", False) and counter["step"] % 2 == 1:
                    x = -x  # 1 - x on [0, 1] images
                out = model.step(x, code, counter["labels"], noise)
            else:
                shift = 1 + counter["step"] % max(n - 1, 1)
                noise["alpha"] = torch.rand(x.shape[0], device=device)
                out = model.step(x, code, eye[(owner + shift) % n], noise)
        counter["step"] += 1
        return out

    step.model = model
    return step


def _dtn_step(config, device: str, dtype, compile: bool = False) -> StepFn:
    """One DTN stage-2 step, `step(source, target)`, on fresh Glorot-initialised f, g, D.

    `config.variant` 'paper': `DTNReference.step` (g then D, f frozen); 'code': one iteration
    of the public code's five-op schedule, `DTNCodeReference.step`, with one batch per epoch
    (f's op every step, as the benchmark's JAX side builds the method). f is random, not
    pretrained: the step's cost does not depend on it. `dtype=torch.bfloat16` runs under
    autocast; `compile=True` compiles each network.
    """
    import torch

    from unpaired.torch_reference import dtn as ref

    f_class = ref.PaperContentExtractor if config.get("f_arch", "code") == "paper" else \
        ref.ContentExtractor
    size = int(config.data.crop_size)
    f_sized = {} if f_class is ref.PaperContentExtractor else {"size": size}
    nets = {"f": f_class(config.nf, config.feature_dim, config.num_classes, **f_sized),
            "g": ref.Generator(config.feature_dim, config.ngf, config.output_nc, size),
            "D": ref.Discriminator(config.output_nc, config.ndf,
                                   1 if config.get("variant", "paper") == "code" else 3, size)}
    nets = {name: ref.glorot_init(net).to(device).train() for name, net in nets.items()}
    if compile:
        nets = {name: torch.compile(net) for name, net in nets.items()}
    common = dict(lr=config.lr, beta1=config.beta1, beta2=config.beta2, eps=config.adam_eps,
                  alpha=config.alpha, beta=config.beta)
    if config.get("variant", "paper") == "code":
        model = ref.DTNCodeReference(
            nets["f"], nets["g"], nets["D"], **common,
            updates=(config.d_src_updates, config.g_src_updates, config.d_trg_updates,
                     config.g_trg_updates),
            f_interval=(config.f_interval, config.f_interval_late, config.f_interval_switch),
            steps_per_epoch=1)
    else:
        model = ref.DTNReference(nets["f"], nets["g"], nets["D"], **common, gamma=config.gamma,
                                 tv_eps=config.tv_eps)
    return _autocast_step(model.step, model, device, dtype)


def _unit_da_step(config, device: str, dtype, compile: bool = False) -> StepFn:
    """UNIT's digit DA iteration (version_02 `COCOGANDAContextTrainer`): see
    `unpaired.torch_reference.unit_da.reference_step`."""
    from unpaired.torch_reference import unit_da

    return unit_da.reference_step(config, device, dtype, compile)


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
    "ufdn": _ufdn_step,
    "unit_da": _unit_da_step,
    "dtn": _dtn_step,
}


def build_reference_step(config, device: str = "cpu", dtype=None, compile: bool = False) -> StepFn:
    """The reference training step for `config.method` on `device` (see `REFERENCE_STEPS`)."""
    return build_from(REFERENCE_STEPS, "step", config, device, dtype, compile)
