"""PyTorch re-expression of UNIT master's VGG perceptual loss (`networks.Vgg16`,
`utils.vgg_preprocess`, `UNIT_Trainer.compute_vgg_loss`), from ``shared/reference/unit.md``
§2.1. Module names are the reference's (`conv1_1` ... `conv5_3`); `widths` scales the blocks
for fast tests (the reference's are 64, 128, 256, 512, 512). For parity tests only.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

BLOCKS = (2, 2, 3, 3, 3)


class Vgg16(nn.Module):
    """VGG16 to relu5_3; max-pools after relu1_2, relu2_2, relu3_3 and none after relu4_3."""

    def __init__(self, widths=(64, 128, 256, 512, 512)):
        super().__init__()
        in_ch = 3
        for b, n in enumerate(BLOCKS):
            for i in range(n):
                setattr(self, f"conv{b + 1}_{i + 1}", nn.Conv2d(in_ch, widths[b], 3, 1, 1))
                in_ch = widths[b]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b, n in enumerate(BLOCKS):
            for i in range(n):
                x = F.relu(getattr(self, f"conv{b + 1}_{i + 1}")(x))
            if b < 3:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
        return x


def vgg_preprocess(batch: torch.Tensor) -> torch.Tensor:
    """RGB -> BGR, [-1, 1] -> [0, 255], minus the Caffe mean (per BGR channel)."""
    r, g, b = torch.chunk(batch, 3, dim=1)
    batch = torch.cat((b, g, r), dim=1)
    batch = (batch + 1) * 255 * 0.5
    mean = torch.tensor([103.939, 116.779, 123.680], dtype=batch.dtype).view(1, 3, 1, 1)
    return batch - mean


def compute_vgg_loss(vgg: nn.Module, img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean((IN(vgg(img)) - IN(vgg(target)))^2): InstanceNorm2d(512, affine=False), whose
    channel count is unused without affine parameters (F.instance_norm, any width)."""
    norm = lambda f: F.instance_norm(f, eps=1e-5)
    return torch.mean((norm(vgg(vgg_preprocess(img))) - norm(vgg(vgg_preprocess(target)))) ** 2)


def frozen(vgg: nn.Module) -> nn.Module:
    """eval mode, no gradients for its parameters (as `UNIT_Trainer.__init__` does)."""
    vgg.eval()
    for p in vgg.parameters():
        p.requires_grad = False
    return vgg
