"""RMSProp as TensorFlow 1 implements it, which is what the paper's recipe (section 6.1.1) was tuned with.

Per parameter, with gradient ``g`` (plus ``weight_decay * p``: L2 regularisation, as TF adds ``wd * l2_loss``)::

    ms  = alpha * ms + (1 - alpha) * g**2          # ms starts at init_square_avg (TF: 1.0)
    mom = momentum * mom + lr * g / sqrt(ms + eps)  # eps inside the square root; lr inside the momentum
    p  -= mom

It differs from ``torch.optim.RMSprop`` in three ways that matter at the paper's settings:

* ``eps`` is added to the mean square *inside* the square root (torch adds it to the root). With the reference
  ``eps=1e-3`` this bounds the step of a parameter whose gradients are tiny.
* the mean-square accumulator starts at 1.0, not 0 (``tf.compat.v1.train.RMSPropOptimizer`` creates its ``rms``
  slot with ``ones_initializer``; Keras's TF2 ``RMSprop`` starts at 0). Starting at 0 divides the first steps by
  ``sqrt((1 - alpha) g**2)``, a step of about ``lr / sqrt(0.1)`` whatever the gradient's size, which is what makes
  torch's RMSprop notoriously unstable at the start; starting at 1 makes the first steps plain momentum SGD that
  grows into RMSProp as the average forgets its start (half-life ~6.6 steps at alpha 0.9).
* the learning rate multiplies the gradient *before* it enters the momentum buffer, so a change of learning rate
  (warm-up, decay) affects new updates only, as in TF; torch's applies ``lr`` to the whole buffer.

Defaults are the paper's: momentum 0.9, decay (``alpha``) 0.9, and the TPU reference implementation's
``eps=1e-3``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer


class RMSpropTF(Optimizer):
    """TensorFlow-1-style RMSProp with momentum (see the module docstring for the exact update).

    ``weight_decay`` is L2 regularisation: ``weight_decay * p`` is added to the gradient before the update (so it
    is normalised like the gradient, as in TF where the L2 term is part of the loss). Set it per parameter group to
    exempt some parameters.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.01, alpha: float = 0.9, eps: float = 1e-3,
                 momentum: float = 0.9, weight_decay: float = 0.0, init_square_avg: float = 1.0) -> None:
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha (decay) must be in [0, 1), got {alpha}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if init_square_avg < 0:
            raise ValueError(f"init_square_avg must be >= 0, got {init_square_avg}")
        defaults = dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay,
                        init_square_avg=init_square_avg)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, square_avgs, bufs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RMSpropTF does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["square_avg"] = torch.full_like(p, group["init_square_avg"])
                    if group["momentum"] > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                square_avgs.append(state["square_avg"])
                if group["momentum"] > 0:
                    bufs.append(state["momentum_buffer"])
            if not params:
                continue
            _update(params, grads, square_avgs, bufs, lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                    momentum=group["momentum"], weight_decay=group["weight_decay"])
        return loss


def _update(params: list[torch.Tensor], grads: list[torch.Tensor], square_avgs: list[torch.Tensor],
            bufs: list[torch.Tensor], *, lr: float, alpha: float, eps: float, momentum: float,
            weight_decay: float) -> None:
    # The foreach kernels do the same arithmetic as a per-tensor loop, one dispatch per list instead of per tensor.
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1.0 - alpha)
    denom = torch._foreach_add(square_avgs, eps)
    torch._foreach_sqrt_(denom)
    if momentum > 0:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_addcdiv_(bufs, grads, denom, value=lr)
        torch._foreach_sub_(params, bufs)
    else:
        torch._foreach_addcdiv_(params, grads, denom, value=-lr)
