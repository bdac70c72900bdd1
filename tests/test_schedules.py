"""Per-epoch learning-rate schedules against torch's LambdaLR / StepLR / CosineAnnealingLR."""

import numpy as np
import pytest
import torch

from unpaired import schedules


def torch_lrs(policy, epochs, lr=2e-4, n_epochs=3, n_epochs_decay=4, epoch_count=1, decay_iters=2):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    if policy == "linear":
        rule = lambda e: 1.0 - max(0, e + epoch_count - n_epochs) / float(n_epochs_decay + 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, rule)
    elif policy == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=decay_iters, gamma=0.1)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_epochs, eta_min=0)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()  # end of the epoch, as the current reference does
    return out


@pytest.mark.parametrize("policy", ["linear", "step", "cosine"])
@pytest.mark.parametrize("epoch_count", [1, 3])
def test_epoch_schedules_match_torch(policy, epoch_count):
    steps_per_epoch = 3
    schedule = schedules.epoch_schedule(
        2e-4, policy=policy, steps_per_epoch=steps_per_epoch, n_epochs=3, n_epochs_decay=4,
        epoch_count=epoch_count, lr_decay_iters=2)
    expected = torch_lrs(policy, 8, epoch_count=epoch_count)
    for epoch, lr in enumerate(expected):
        for k in range(steps_per_epoch):  # constant within an epoch
            np.testing.assert_allclose(float(schedule(epoch * steps_per_epoch + k)), lr, rtol=1e-6)


def test_linear_schedule_last_epoch_is_lr_over_decay_plus_one():
    schedule = schedules.epoch_schedule(2e-4, steps_per_epoch=10, n_epochs=100, n_epochs_decay=100)
    np.testing.assert_allclose(float(schedule(199 * 10)), 2e-4 / 101, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(99 * 10 + 9)), 2e-4, rtol=1e-6)


def test_bad_schedule_arguments_are_rejected():
    with pytest.raises(ValueError, match="lr_policy"):
        schedules.epoch_schedule(1.0, policy="exponential", steps_per_epoch=1)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        schedules.epoch_schedule(1.0, steps_per_epoch=0)


@pytest.mark.parametrize("lr,epochs", [(2e-4, 40), (1e-6, 40)])
def test_plateau_matches_torch_reduce_lr_on_plateau_stepped_with_cyclegans_constant_metric(lr, epochs):
    """The reference's ReduceLROnPlateau(mode='min', factor=0.2, threshold=0.01, patience=5),
    stepped at each epoch's end with `model.metric` (0: CycleGAN never sets it).

    2e-4 over 40 epochs sees six cuts; 1e-6 sees the eps=1e-8 rule stop cutting after three."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=0.2, threshold=0.01, patience=5)
    expected = []
    for _ in range(epochs):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(0)
    assert len(set(expected)) >= 4  # at least three cuts are exercised
    steps_per_epoch = 2
    schedule = schedules.epoch_schedule(lr, policy="plateau", steps_per_epoch=steps_per_epoch)
    for epoch, want in enumerate(expected):
        for k in range(steps_per_epoch):
            np.testing.assert_allclose(float(schedule(epoch * steps_per_epoch + k)), want, rtol=1e-6)
