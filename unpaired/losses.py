"""Loss functions as pure functions, with the reductions of the PyTorch references.

Every loss reduces with a mean over all elements (`nn.MSELoss()`, `nn.L1Loss()`,
`nn.BCEWithLogitsLoss()` defaults) and returns a scalar in at least float32, so bf16
networks still get float32 losses.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

GAN_MODES = ("lsgan", "vanilla", "wgangp", "hinge")


def _f32(x: Array) -> Array:
    """At least float32: bf16 network outputs give float32 losses, float64 stays float64."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def l1_loss(prediction: Array, target: Array) -> Array:
    """`nn.L1Loss()`: mean absolute error over all elements."""
    return jnp.mean(jnp.abs(_f32(prediction) - _f32(target)))


def mse_loss(prediction: Array, target: Array) -> Array:
    """`nn.MSELoss()`: mean squared error over all elements."""
    return jnp.mean(jnp.square(_f32(prediction) - _f32(target)))


def bce_with_logits(logits: Array, target: Array) -> Array:
    """`nn.BCEWithLogitsLoss()` in its numerically stable form, mean over all elements."""
    x, z = _f32(logits), _f32(target)
    return jnp.mean(jnp.maximum(x, 0) - x * z + jnp.log1p(jnp.exp(-jnp.abs(x))))


def gan_loss(
    prediction: Array, target_is_real: bool, gan_mode: str = "lsgan",
    *, for_discriminator: bool = True,
) -> Array:
    """The reference's `GANLoss(gan_mode)(prediction, target_is_real)` on raw logits.

    lsgan: MSE against 1/0; vanilla: BCE with logits against 1/0; wgangp: -mean for real,
    +mean for fake. hinge (not in the reference) uses relu(1 -/+ D) for the
    discriminator and -mean(D) for the generator, hence `for_discriminator`.
    """
    pred = _f32(prediction)
    if gan_mode == "lsgan":
        return mse_loss(pred, jnp.full_like(pred, 1.0 if target_is_real else 0.0))
    if gan_mode == "vanilla":
        return bce_with_logits(pred, jnp.full_like(pred, 1.0 if target_is_real else 0.0))
    if gan_mode == "wgangp":
        return -jnp.mean(pred) if target_is_real else jnp.mean(pred)
    if gan_mode == "hinge":
        if not for_discriminator:
            if not target_is_real:
                raise ValueError("the hinge generator loss is defined for real targets only")
            return -jnp.mean(pred)
        sign = 1.0 if target_is_real else -1.0
        return jnp.mean(jax.nn.relu(1.0 - sign * pred))
    raise ValueError(f"unknown gan_mode {gan_mode!r}; expected one of {GAN_MODES}")


def discriminator_loss(
    real_logits: Array, fake_logits: Array, gan_mode: str = "lsgan"
) -> Array:
    """The reference's `backward_D_basic`: 0.5 * (loss(D(real), 1) + loss(D(fake), 0))."""
    loss_real = gan_loss(real_logits, True, gan_mode)
    loss_fake = gan_loss(fake_logits, False, gan_mode)
    return 0.5 * (loss_real + loss_fake)


def gradient_penalty(
    discriminator: Callable[[Array], Array],
    real: Array,
    fake: Array,
    alpha: Array | None = None,
    *,
    kind: str = "mixed",
    constant: float = 1.0,
    weight: float = 10.0,
) -> Array:
    """WGAN-GP penalty of the reference's `cal_gradient_penalty`.

    weight * mean_n((||dD(x_n)/dx_n + 1e-16||_2 - constant)^2) at x = real ('real'),
    fake ('fake') or alpha * real + (1 - alpha) * fake ('mixed', alpha one draw per
    sample, shape (N,)). The 1e-16 is added to every gradient element before the norm,
    as the reference does. Differentiable again (for the discriminator update).
    """
    real = _f32(real)
    fake = _f32(fake)
    if kind == "real":
        points = real
    elif kind == "fake":
        points = fake
    elif kind == "mixed":
        if alpha is None:
            raise ValueError("kind='mixed' needs alpha of shape (batch,)")
        a = _f32(alpha).reshape((-1,) + (1,) * (real.ndim - 1))
        points = a * real + (1.0 - a) * fake
    else:
        raise ValueError(f"unknown gradient penalty kind {kind!r}")
    grads = jax.grad(lambda x: jnp.sum(_f32(discriminator(x))))(points)
    flat = grads.reshape(grads.shape[0], -1) + 1e-16
    norms = jnp.sqrt(jnp.sum(jnp.square(flat), axis=1))
    return jnp.mean(jnp.square(norms - constant)) * weight



def cross_entropy(logits: Array, label: int | Array) -> Array:
    """`F.cross_entropy(logits, labels)`: mean softmax cross-entropy; `label` an int for all rows."""
    logits = _f32(logits)
    labels = jnp.broadcast_to(jnp.asarray(label, jnp.int32), logits.shape[:1])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def tv_loss(z: Array, eps: float = 1e-8) -> Array:
    """DTN's anisotropic total variation with B = 1: mean of sqrt(dx^2 + dy^2 + eps).

    dx, dy are forward differences at the (H-1) x (W-1) pixels that have a right and a
    lower neighbour (no padding at the border); `eps` keeps the gradient finite where
    an image is locally flat (sqrt'(0) is infinite). Means, not the paper's sums.
    """
    z = _f32(z)
    dx = z[:, :-1, 1:] - z[:, :-1, :-1]
    dy = z[:, 1:, :-1] - z[:, :-1, :-1]
    return jnp.mean(jnp.sqrt(dx * dx + dy * dy + eps))
