"""Shared test utilities: layout conversion, error measures, torch <-> jax weight copies, real digit data."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch


def nchw(x: np.ndarray) -> torch.Tensor:
    """NHWC numpy -> NCHW torch tensor (dtype kept)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def nhwc(t) -> np.ndarray:
    """NCHW torch tensor -> NHWC numpy."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t).transpose(0, 2, 3, 1)


def rel_err(a, b) -> float:
    """max|a - b| / max(max|b|, tiny): one relative error for a whole tensor."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def x64():
    """A context in which JAX computes in float64 (for gradient parity)."""
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # older JAX

    return enable_x64()


def grad_errors(ours: dict, theirs: dict) -> dict:
    """Per-tensor relative gradient errors, floored at 1e-3 of the largest gradient.

    Gradients that are mathematically zero (a conv bias before an affine-free
    InstanceNorm) hold only rounding noise on both sides; the floor keeps them from
    being compared relative to that noise, while every other tensor keeps its own scale.
    """
    assert set(ours) == set(theirs), (sorted(set(ours) ^ set(theirs)))
    scale = max(float(np.max(np.abs(np.asarray(v)))) for v in theirs.values())
    out = {}
    for key, value in theirs.items():
        a, b = np.asarray(ours[key], np.float64), np.asarray(value, np.float64)
        assert a.shape == b.shape, (key, a.shape, b.shape)
        denom = max(float(np.max(np.abs(b))), 1e-3 * scale, 1e-30)
        out[key] = float(np.max(np.abs(a - b)) / denom)
    return out


def biases_before_instance_norm(net: torch.nn.Module) -> set:
    """state_dict keys of conv biases that feed an affine-free InstanceNorm directly.

    The norm's mean subtraction cancels them, so their gradient is mathematically zero
    and only rounding noise (~1e-14) reaches Adam, which scales it up to lr-sized noise
    steps on both sides. They are compared on an absolute scale instead.
    """
    keys = set()
    for prefix, module in net.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module.named_children())
            for (name, child), (_, nxt) in zip(children, children[1:]):
                if isinstance(child, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and \
                        isinstance(nxt, torch.nn.InstanceNorm2d) and child.bias is not None:
                    keys.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return keys


def state_from_torch(method, tnets: dict, names, dtype=torch.float32, seed: int = 42):
    """`method`'s step-0 TrainState holding the torch nets' weights (key `seed`); float64
    leaves, built under x64, when the nets are torch.float64."""
    import jax
    import jax.numpy as jnp

    from unpaired import torch_io

    variables = {n: torch_io.from_state_dict(tnets[n].state_dict(), method.network_template(n))
                 for n in names}
    if dtype != torch.float64:
        return method.state_from_variables(variables, jax.random.key(seed))
    with x64():
        variables = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), variables)
        return method.state_from_variables(variables, jax.random.key(seed))


def assert_grads_match(ours: dict, expected: dict, tol: float = 1e-9) -> None:
    """Our per-network gradient trees, keyed `net/state_dict key`, against torch's `expected`
    (`grad_errors`: each tensor to `tol` of its own scale)."""
    from unpaired import torch_io

    flat = {f"{name}/{k}": v for name, grads in ours.items()
            for k, v in torch_io.to_state_dict({"params": grads}).items()}
    errors = grad_errors(flat, expected)
    assert max(errors.values()) < tol, max(errors.items(), key=lambda kv: kv[1])


def assert_step_losses_match(i: int, metrics: dict, terms: dict) -> None:
    """Step i's logged losses against the reference's (torch scalars) to 1e-9, floored at 1e-3."""
    for name, value in terms.items():
        value = float(value.detach())
        assert abs(float(metrics[name]) - value) <= 1e-9 * max(abs(value), 1e-3), (i, name)


def assert_params_match(i: int, name: str, params, net: torch.nn.Module, cancelled: set,
                        bias_bound: float) -> tuple[dict, dict, list]:
    """Network `name`'s parameters after step i against the torch net's: the `cancelled` biases
    (rounding-noise gradients on both sides) within `bias_bound`, the rest (network-wise) to
    1e-9 of the net's largest weight. Returns ours, theirs (state_dict layout) and kept keys."""
    from unpaired import torch_io

    ours = torch_io.to_state_dict({"params": params})
    theirs = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    for key in cancelled:  # noise-driven on both sides
        assert np.max(np.abs(ours[key] - theirs[key])) < bias_bound, (i, name, key)
    kept = [k for k in theirs if k not in cancelled]
    scale = max(np.max(np.abs(theirs[k])) for k in kept)
    worst = max(np.max(np.abs(ours[k] - theirs[k])) for k in kept)
    assert worst / scale < 1e-9, (i, name, worst / scale)
    return ours, theirs, kept


def sized_config(config, size: int, batch_size: int, overrides: dict):
    """`config` on square `size` images (image, crop and load size) in batches of
    `batch_size`, then `overrides` set key by key."""
    config.data.image_size = config.data.crop_size = config.data.load_size = size
    config.batch_size = batch_size
    for key, value in overrides.items():
        config[key] = value
    return config


def workdir_at_step(workdir: str, step: int, dest) -> str:
    """A copy of a training run's workdir whose newest checkpoint is `step` (the later ones
    dropped): resuming it continues a checkpoint another process wrote, without training
    the first steps again."""
    import os
    import shutil

    dest = os.fspath(dest)
    shutil.copytree(workdir, dest, dirs_exist_ok=True)
    ckpts = os.path.join(dest, "checkpoints")
    for name in os.listdir(ckpts):
        if name.isdigit() and int(name) > step:
            shutil.rmtree(os.path.join(ckpts, name))
    assert str(step) in os.listdir(ckpts), (workdir, step, os.listdir(ckpts))
    return dest



# --- real digit data: MNIST and USPS in the data root (`unpaired.data.cache`). tests/conftest.py
# points UNPAIRED_DATA at ../shared/data when that folder exists; otherwise it is the user's
# own setting or cache folder (python -m launch.fetch mnist usps fills it).
def real_digits_root() -> str | None:
    """The data root when it holds MNIST and USPS (train and test IDX files), else None."""
    from unpaired.data import cache

    root = cache.data_root()
    files = [os.path.join(root, name, f"{split}-{part}-ubyte.gz") for name in cache.DIGIT_SETS
             for split in ("train", "t10k") for part in ("images-idx3", "labels-idx1")]
    return root if all(os.path.isfile(f) for f in files) else None


def _skip_reason() -> str:
    from unpaired.data import cache

    return (f"real MNIST/USPS IDX files not found in {cache.data_root()}: set UNPAIRED_DATA or put "
            "the data at ../shared/data (python -m launch.fetch mnist usps fetches them)")


REAL_DIGITS = real_digits_root()
needs_real_digits = pytest.mark.skipif(REAL_DIGITS is None, reason=_skip_reason())


def real_digits(name: str, split: str = "train", part: str = "images") -> str:
    """A real IDX file: real_digits('usps', 't10k', 'labels') -> <root>/usps/t10k-labels-idx1-ubyte.gz."""
    kind = {"images": "images-idx3", "labels": "labels-idx1"}[part]
    return os.path.join(REAL_DIGITS or "<no real digits>", name, f"{split}-{kind}-ubyte.gz")


def fake_digits_root(root, n: int = 4) -> str:
    """A data root of tiny blank MNIST/USPS IDX files (n images a split, labels 0..n-1): enough for
    presets to validate, not to learn from."""
    from unpaired.data.idx import write_idx

    for name, side in (("mnist", 28), ("usps", 16)):
        folder = os.path.join(os.fspath(root), name)
        os.makedirs(folder, exist_ok=True)
        for split in ("train", "t10k"):
            write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), np.zeros((n, side, side), np.uint8))
            write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), np.arange(n, dtype=np.uint8) % 10)
    return os.fspath(root)
