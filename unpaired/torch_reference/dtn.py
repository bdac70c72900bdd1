"""PyTorch re-expression of the DTN reference (yunjey/domain-transfer-network, TensorFlow).

Written from ``shared/reference/dtn.md`` (sections 2-4), not copied: TensorFlow's
operators are spelled out explicitly in torch so that the parity tests compare our
Flax layers with an independent statement of TF's semantics:

* 'SAME' conv = ``F.pad`` with TF's (before, after) split (extra pixel after) + VALID conv;
* 'SAME' conv2d_transpose = the full transposed conv (padding 0) cropped to input*stride,
  starting at the 'SAME' padding's "before" amount;
* slim.batch_norm: eps 1e-3, moving = moving - 0.05 (moving - batch), the moving variance
  averaging the BIASED batch variance (PyTorch's BatchNorm2d would use the unbiased one).

Module attributes carry the TF layer names (conv1, bn1, conv_transpose1, ...) so
``tf_state(net, scope)`` names every tensor as a TF checkpoint does, in TF layout.
``DTNReference`` is stage 2 with the paper's objective (ternary D, f frozen),
``DTNCodeReference`` stage 2 as the public code trains it (binary D, five ``TFAdam``
train ops), ``PaperContentExtractor`` the paper's conv + max-pool f,
``PretrainReference`` stage 1 (f as a classifier). Works in float32 and float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS, BN_MOMENTUM = 1e-3, 0.05


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF 'SAME' (before, after) for one axis: total = max((ceil(n/s)-1)s + k - n, 0)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TFConv(nn.Conv2d):
    """slim.conv2d(stride 2) with 'SAME' (explicit asymmetric pad) or 'VALID' padding."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: str, stride: int = 2):
        super().__init__(cin, cout, kernel, stride=stride, padding=0)
        self.tf_padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tf_padding == "SAME":
            top, bottom = same_padding(x.shape[2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[3], self.kernel_size[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class TFDeconv(nn.ConvTranspose2d):
    """slim.conv2d_transpose(stride 2): full transposed conv, cropped for 'SAME'."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: str, stride: int = 2):
        super().__init__(cin, cout, kernel, stride=stride, padding=0)
        self.tf_padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        if self.tf_padding == "SAME":
            s = self.stride[0]
            h, w = x.shape[2] * s, x.shape[3] * s
            top, _ = same_padding(h, self.kernel_size[0], s)
            left, _ = same_padding(w, self.kernel_size[1], s)
            y = y[:, :, top:top + h, left:left + w]
        return y


class TFBatchNorm(nn.Module):
    """slim.batch_norm(decay 0.95, epsilon 1e-3): explicit statistics, biased moving variance."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))   # gamma
        self.bias = nn.Parameter(torch.zeros(channels))    # beta
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_mean -= BN_MOMENTUM * (self.running_mean - mean.detach())
                self.running_var -= BN_MOMENTUM * (self.running_var - var.detach())
        else:
            mean, var = self.running_mean, self.running_var
        shape = (1, -1, 1, 1)
        return ((x - mean.view(shape)) / torch.sqrt(var.view(shape) + BN_EPS)
                * self.weight.view(shape) + self.bias.view(shape))


class ContentExtractor(nn.Module):
    """f: conv1-3 (3x3 SAME) + bn + ReLU, conv4 (4x4 VALID) + bn4 + tanh; `out` 1x1 head."""

    def __init__(self, nf: int = 64, feature_dim: int = 128, num_classes: int = 10, size: int = 32):
        super().__init__()
        self.n = {32: 3, 64: 4}[size]  # stride-2 blocks down to 4x4
        widths = (3,) + tuple(nf * 2 ** i for i in range(self.n))
        for i in range(1, self.n + 1):
            setattr(self, f"conv{i}", TFConv(widths[i - 1], widths[i], 3, "SAME"))
            setattr(self, f"bn{i}", TFBatchNorm(widths[i]))
        setattr(self, f"conv{self.n + 1}", TFConv(widths[-1], feature_dim, 4, "VALID"))
        setattr(self, f"bn{self.n + 1}", TFBatchNorm(feature_dim))
        self.out = TFConv(feature_dim, num_classes, 1, "VALID")

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)  # tf.image.grayscale_to_rgb
        for i in range(1, self.n + 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        last = self.n + 1
        x = torch.tanh(getattr(self, f"bn{last}")(getattr(self, f"conv{last}")(x)))
        return self.out(x).flatten(1) if logits else x


class PaperContentExtractor(nn.Module):
    """The paper's f: 3x3 convs (padding 1) each followed by max-pool (2, 2, 2, 4) and ReLU;
    the feature is taken after the last pool, before its ReLU; `out` (1x1) on ReLU(feature)."""

    def __init__(self, nf: int = 64, feature_dim: int = 128, num_classes: int = 10):
        super().__init__()
        widths = (3, nf, 2 * nf, 4 * nf, feature_dim)
        for i in range(1, 5):
            setattr(self, f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], 3, padding=1))
        self.out = nn.Conv2d(feature_dim, num_classes, 1)

    def forward(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        for i in range(1, 4):
            x = F.relu(F.max_pool2d(getattr(self, f"conv{i}")(x), 2))
        x = F.max_pool2d(self.conv4(x), 4)
        return self.out(F.relu(x)).flatten(1) if logits else x


class Generator(nn.Module):
    """g: deconv1 (4x4 VALID) + bn + ReLU, deconv2-3 (3x3 SAME) + bn + ReLU, deconv4 + tanh."""

    def __init__(self, feature_dim: int = 128, ngf: int = 128, output_nc: int = 1, size: int = 32):
        super().__init__()
        self.n = {32: 3, 64: 4}[size]
        widths = (feature_dim,) + tuple(ngf * 2 ** (self.n - i) for i in range(1, self.n + 1))
        for i in range(1, self.n + 1):
            kernel, padding = (4, "VALID") if i == 1 else (3, "SAME")
            setattr(self, f"conv_transpose{i}", TFDeconv(widths[i - 1], widths[i], kernel, padding))
            setattr(self, f"bn{i}", TFBatchNorm(widths[i]))
        setattr(self, f"conv_transpose{self.n + 1}", TFDeconv(ngf, output_nc, 3, "SAME"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.n + 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv_transpose{i}")(x)))
        return torch.tanh(getattr(self, f"conv_transpose{self.n + 1}")(x))


class Discriminator(nn.Module):
    """D: conv1 + ReLU + bn1 + ReLU, conv2-3 + bn + ReLU, conv4 (4x4 VALID) -> (B, outputs)."""

    def __init__(self, input_nc: int = 1, ndf: int = 128, num_outputs: int = 1, size: int = 32):
        super().__init__()
        self.n = {32: 3, 64: 4}[size]
        widths = (input_nc,) + tuple(ndf * 2 ** i for i in range(self.n))
        for i in range(1, self.n + 1):
            setattr(self, f"conv{i}", TFConv(widths[i - 1], widths[i], 3, "SAME"))
            setattr(self, f"bn{i}", TFBatchNorm(widths[i]))
        setattr(self, f"conv{self.n + 1}", TFConv(widths[-1], num_outputs, 4, "VALID"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(F.relu(self.conv1(x))))
        for i in range(2, self.n + 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
        return getattr(self, f"conv{self.n + 1}")(x).flatten(1)


def glorot_init(net: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """xavier_initializer(): U(-a, a), a = sqrt(6 / (k*k*(C_in + C_out))); biases 0."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            fan = module.weight[0, 0].numel() * (module.in_channels + module.out_channels)
            bound = (6.0 / fan) ** 0.5
            with torch.no_grad():
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.zero_()
    return net


_TF_LEAF = {"weight": "weights", "bias": "biases"}
_TF_BN_LEAF = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
               "running_var": "moving_variance"}


def tf_state(net: nn.Module, scope: str) -> dict:
    """{TF variable name: numpy array in TF layout} of a network (weights [kh,kw,in|out,out|in])."""
    out = {}
    for key, value in net.state_dict().items():
        layer, leaf = key.split(".")
        array = value.detach().cpu().numpy()
        if layer.startswith("bn"):
            out[f"{scope}/{layer}/{_TF_BN_LEAF[leaf]}"] = array
        else:
            if leaf == "weight":  # conv [out,in,kh,kw] / deconv [in,out,kh,kw] -> TF
                array = array.transpose(2, 3, 1, 0)
            out[f"{scope}/{layer}/{_TF_LEAF[leaf]}"] = array
    return out


def load_tf_state(net: nn.Module, scope: str, arrays: dict) -> nn.Module:
    """Copies TF-named arrays (TF layout) into `net`; names must cover its state_dict."""
    state = {}
    for key, value in net.state_dict().items():
        layer, leaf = key.split(".")
        name = f"{scope}/{layer}/{(_TF_BN_LEAF if layer.startswith('bn') else _TF_LEAF)[leaf]}"
        array = torch.as_tensor(arrays[name]).to(value.dtype)
        if leaf == "weight" and not layer.startswith("bn"):
            array = array.permute(3, 2, 0, 1)
        state[key] = array
    net.load_state_dict(state)
    return net


def tv_loss(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Anisotropic TV, B=1, explicit: mean over the (H-1)x(W-1) interior of sqrt(dx^2+dy^2+eps)."""
    dx = z[:, :, :-1, 1:] - z[:, :, :-1, :-1]
    dy = z[:, :, 1:, :-1] - z[:, :, :-1, :-1]
    return torch.sqrt(dx ** 2 + dy ** 2 + eps).mean()


class DTNReference:
    """Stage 2 with the paper's objective: G = g o f with f frozen, ternary D.

    One step: the G update (D frozen) on
    L_G = CE(D(g(f(s))), 2) + CE(D(g(f(t))), 2) + alpha mse(f(s), f(g(f(s))))
          + beta mse(t, g(f(t))) + gamma TV(g(f(s))),
    then the D update on the same (pre-update) fakes:
    L_D = CE(D(fake_s), 0) + CE(D(fake_t), 1) + CE(D(t), 2). Every network runs in
    training mode (batch statistics, moving averages updated per call), calls in the
    order f(s), g, f(t), g, D(fake_s), D(fake_t), f(fake_s); then D(fake_s), D(fake_t), D(t).
    Adam(lr, (beta1, beta2), eps) for g and for D.
    """

    def __init__(self, f: nn.Module, g: nn.Module, D: nn.Module, lr: float = 3e-4,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 alpha: float = 15.0, beta: float = 15.0, gamma: float = 0.0,
                 tv_eps: float = 1e-8):
        self.f, self.g, self.D = f, g, D
        for p in f.parameters():
            p.requires_grad_(False)
        self.alpha, self.beta, self.gamma, self.tv_eps = alpha, beta, gamma, tv_eps
        self.opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)

    @staticmethod
    def _ce(logits: torch.Tensor, label: int) -> torch.Tensor:
        target = torch.full((logits.shape[0],), label, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target)

    def generator_loss(self, s: torch.Tensor, t: torch.Tensor):
        """(L_G, terms, fakes) with the paper's weights; D's parameters get no gradient use."""
        fs = self.f(s)
        fake_s = self.g(fs)
        fake_t = self.g(self.f(t))
        terms = {
            "G_src": self._ce(self.D(fake_s), 2),
            "G_trg": self._ce(self.D(fake_t), 2),
        }
        terms["const"] = self.alpha * F.mse_loss(self.f(fake_s), fs)
        terms["tid"] = self.beta * F.mse_loss(fake_t, t)
        terms["tv"] = self.gamma * tv_loss(fake_s, self.tv_eps)
        total = sum(terms.values())
        return total, terms, {"fake_s": fake_s, "fake_t": fake_t}

    def discriminator_loss(self, t: torch.Tensor, fake_s: torch.Tensor, fake_t: torch.Tensor):
        """(L_D, terms): three-class cross-entropy, fakes detached."""
        terms = {
            "D_fake_src": self._ce(self.D(fake_s.detach()), 0),
            "D_fake_trg": self._ce(self.D(fake_t.detach()), 1),
            "D_real": self._ce(self.D(t), 2),
        }
        return sum(terms.values()), terms

    def step(self, s: torch.Tensor, t: torch.Tensor) -> dict:
        """One paper-objective step (G then D); returns float losses."""
        loss_g, terms, fakes = self.generator_loss(s, t)
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        self.D.zero_grad()
        loss_d, d_terms = self.discriminator_loss(t, fakes["fake_s"], fakes["fake_t"])
        self.opt_d.zero_grad()
        loss_d.backward()
        self.opt_d.step()
        out = {k: float(v.detach()) for k, v in {**terms, **d_terms}.items()}
        out.update(G=float(loss_g), D=float(loss_d))
        return out


class PretrainReference:
    """Stage 1: f as a classifier, mean softmax cross-entropy, Adam(lr) (slim create_train_op)."""

    def __init__(self, f: nn.Module, lr: float = 3e-4, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        self.f = f
        self.opt = torch.optim.Adam(f.parameters(), lr=lr, betas=(beta1, beta2), eps=eps)

    def step(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        loss = F.cross_entropy(self.f(x, logits=True), labels)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss)


class TFAdam(torch.optim.Optimizer):
    """tf.train.AdamOptimizer re-expressed: m, v as usual, then
    theta -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps) (eps on the raw sqrt(v))."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                state["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                lr_t = group["lr"] * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
                p.sub_(lr_t * state["m"] / (state["v"].sqrt() + group["eps"]))


class DTNCodeReference:
    """Stage 2 as yunjey's TF code trains it (dtn.md 2.5): binary D, five TF-Adam train ops.

    Source sub-graph: fx = f(s), fake = g(fx), logits = D(fake), fgfx = f(fake);
    d_src = BCE(logits, 0) (D), g_src = BCE(logits, 1) (g), f_src = alpha mse(fx, fgfx) (f).
    Target ops run the source sub-graph too (its BN updates are attached to them), then
    reconst = g(f(t)); d_trg = BCE(D(reconst), 0) + BCE(D(t), 1) (D);
    g_trg = BCE(D(reconst), 1) + beta mse(reconst, t) (g). Every op recomputes its forward
    with the current weights, differentiates its loss with respect to its own network
    only, and steps its own TFAdam. BN moving averages: once per call, in call order.
    """

    OPS = {"d_src": "D", "g_src": "g", "f_src": "f", "d_trg": "D", "g_trg": "g"}

    def __init__(self, f: nn.Module, g: nn.Module, D: nn.Module, lr: float = 3e-4,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 alpha: float = 15.0, beta: float = 15.0,
                 updates: tuple = (1, 6, 2, 4), f_interval: tuple = (15, 30, 1600),
                 steps_per_epoch: int = 732):
        self.nets = {"f": f, "g": g, "D": D}
        self.alpha, self.beta = alpha, beta
        self.updates = dict(zip(("d_src", "g_src", "d_trg", "g_trg"), updates))
        self.f_interval, self.steps_per_epoch = f_interval, steps_per_epoch
        self.opts = {op: TFAdam(self.nets[net].parameters(), lr=lr, betas=(beta1, beta2), eps=eps)
                     for op, net in self.OPS.items()}
        self.steps = 0

    @staticmethod
    def _bce(logits: torch.Tensor, label: float) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, label))

    def source_graph(self, s: torch.Tensor) -> dict:
        f, g, D = self.nets["f"], self.nets["g"], self.nets["D"]
        fx = f(s)
        fake = g(fx)
        logits = D(fake)
        fgfx = f(fake)
        return {"d_src": self._bce(logits, 0.0), "g_src": self._bce(logits, 1.0),
                "f_src": self.alpha * F.mse_loss(fx, fgfx)}

    def target_graph(self, s: torch.Tensor, t: torch.Tensor) -> dict:
        self.source_graph(s)
        f, g, D = self.nets["f"], self.nets["g"], self.nets["D"]
        reconst = g(f(t))
        logits_fake = D(reconst)
        logits_real = D(t)
        terms = {"d_trg": self._bce(logits_fake, 0.0) + self._bce(logits_real, 1.0),
                 "g_trg_gan": self._bce(logits_fake, 1.0),
                 "tid": self.beta * F.mse_loss(reconst, t)}
        terms["g_trg"] = terms["g_trg_gan"] + terms["tid"]
        return terms

    def run_op(self, op: str, s: torch.Tensor, t: torch.Tensor) -> dict:
        """One sess.run of train op `op`: forward, gradient of its loss for its net, TF Adam."""
        terms = self.source_graph(s) if op.endswith("_src") else self.target_graph(s, t)
        net = self.nets[self.OPS[op]]
        grads = torch.autograd.grad(terms[op], list(net.parameters()), allow_unused=True)
        for p, grad in zip(net.parameters(), grads):  # f's `out` head is unused: zero gradient
            p.grad = torch.zeros_like(p) if grad is None else grad
        self.opts[op].step()
        for p in net.parameters():
            p.grad = None
        return {k: float(v.detach()) for k, v in terms.items()}

    def f_due(self, step: int) -> bool:
        early, late, switch = self.f_interval
        return (step % self.steps_per_epoch) % (late if step > switch else early) == 0

    def step(self, s: torch.Tensor, t: torch.Tensor) -> dict:
        """One iteration of solver.train's loop on (s, t); losses of each op's last run."""
        for _ in range(self.updates["d_src"]):
            d_src = self.run_op("d_src", s, t)
        for _ in range(self.updates["g_src"]):
            src = self.run_op("g_src", s, t)
        due = self.f_due(self.steps)
        f_terms = self.run_op("f_src", s, t) if due else src
        for _ in range(self.updates["d_trg"]):
            d_trg = self.run_op("d_trg", s, t)
        for _ in range(self.updates["g_trg"]):
            trg = self.run_op("g_trg", s, t)
        self.steps += 1
        return {"D_src": d_src["d_src"], "G_src": src["g_src"], "const": f_terms["f_src"],
                "D_trg": d_trg["d_trg"], "G_trg": trg["g_trg"], "G_trg_gan": trg["g_trg_gan"],
                "tid": trg["tid"], "f_updated": float(due)}
