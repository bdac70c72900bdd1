"""The reference generators' inference forward, for `launch/benchmark.py --mode=translate`.

`build_reference_translator(config, device, dtype, compile)` returns `forward(x)`: one NCHW
batch in [-1, 1] translated as the method's default request (what our `translate` serves
without flags: CycleGAN AtoB = G_A, UNIT AtoB = gen_b.decode(gen_a.encode(x)), UFDN to the
last domain, DTN g(f(x))), by the reference modules of the same architecture, freshly
initialised, in eval mode under `torch.no_grad()` (as the references' test scripts run).
A method plugs in by adding a builder to `REFERENCE_TRANSLATORS`. Needs torch (the `test`
extra); the rest of `unpaired` never imports this module.
"""

from __future__ import annotations

from typing import Any, Callable

from unpaired.torch_reference import autocast, build_from

Forward = Callable[[Any], Any]


def _wrap(run: Callable[[Any], Any], device: str, dtype) -> Forward:
    """`run` under no_grad, and under autocast for a non-float32 `dtype`."""
    import torch

    def forward(x):
        with torch.no_grad(), autocast(device, dtype):
            return run(x)

    return forward


def _cyclegan(config, device: str, dtype, compile: bool = False) -> Forward:
    """G_A = define_G(input_nc, output_nc, ngf, netG, norm, dropout), reference init, eval()."""
    import torch

    from unpaired.torch_reference import cyclegan as ref

    net = ref.define_G(config.input_nc, config.output_nc, config.ngf, config.netG, config.norm,
                       use_dropout=not config.no_dropout)
    ref.init_weights(net, config.init_gain, init_type=config.get("init_type", "normal"))
    net = net.to(device).eval()
    return _wrap(torch.compile(net) if compile else net, device, dtype)


def _unit(config, device: str, dtype, compile: bool = False) -> Forward:
    """UNIT master: gen_b.decode(gen_a.encode(x)[0]) (the mean code, no noise), eval()."""
    import torch

    from unpaired.torch_reference import unit as ref

    if config.get("arch", "master") != "master":
        raise NotImplementedError(f"no reference translator for UNIT arch {config.arch!r}")
    nets = ref.build_unit_master(config)
    enc, dec = nets["gen_a"].enc.to(device).eval(), nets["gen_b"].dec.to(device).eval()
    if compile:
        enc, dec = torch.compile(enc), torch.compile(dec)
    return _wrap(lambda x: dec(enc(x)), device, dtype)


def _ufdn(config, device: str, dtype, compile: bool = False) -> Forward:
    """UFDN vae(x, one-hot of the last domain)[0] in eval mode (z = mu, running BN statistics)."""
    import torch

    from unpaired.torch_reference import ufdn as ref

    domains = [d.strip() for d in str(config.data.domains).split(",") if d.strip()]
    n, depth = len(domains), int(config.img_depth)
    vae = ref.UFDN(config.encoder, config.decoder, n, depth).to(device).eval()
    net = torch.compile(vae) if compile else vae
    code = torch.eye(n, device=device)[n - 1]
    return _wrap(lambda x: net(x, code.expand(x.shape[0], n))[0], device, dtype)


def _dtn(config, device: str, dtype, compile: bool = False) -> Forward:
    """DTN G = g(f(x)) on Glorot-initialised f (config.f_arch) and g, eval mode (moving statistics)."""
    import torch

    from unpaired.torch_reference import dtn as ref

    size = int(config.data.crop_size)
    if config.get("f_arch", "code") == "paper":
        f = ref.PaperContentExtractor(config.nf, config.feature_dim, config.num_classes)
    else:
        f = ref.ContentExtractor(config.nf, config.feature_dim, config.num_classes, size=size)
    g = ref.Generator(config.feature_dim, config.ngf, config.output_nc, size)
    f, g = (ref.glorot_init(net).to(device).eval() for net in (f, g))
    if compile:
        f, g = torch.compile(f), torch.compile(g)
    return _wrap(lambda x: g(f(x)), device, dtype)


# Builders by `config.method`: (config, device, dtype, compile=False) -> forward(x).
REFERENCE_TRANSLATORS: dict[str, Callable[..., Forward]] = {
    "cyclegan": _cyclegan,
    "unit": _unit,
    "ufdn": _ufdn,
    "dtn": _dtn,
}


def build_reference_translator(config, device: str = "cpu", dtype=None, compile: bool = False) -> Forward:
    """The reference generator forward for `config.method` (see `REFERENCE_TRANSLATORS`)."""
    return build_from(REFERENCE_TRANSLATORS, "translator", config, device, dtype, compile)
