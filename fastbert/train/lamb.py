"""LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning") with multi-tensor ops.

Adam moments with bias correction give a per-tensor update ``u = m̂ / (√v̂ + eps) + wd·w``;
each tensor then moves by ``lr · ‖w‖ / ‖u‖ · u`` (the trust ratio, at most
``max_trust_ratio``, and 1 when either norm is zero). The math is fp32 whatever the
parameters' dtype, and the moments are fp32.

The step runs ``torch._foreach_*`` ops over all the tensors of a parameter group that share a
device and dtype, so its op count does not grow with the number of tensors, apart from one
``masked_fill_`` per gradient when a step may be skipped (below). The bias corrections and
trust ratios are computed for all tensors at once as vectors, and nothing is read on the host.
Every full-size op works in place, on the moments, the weights and one update buffer. On
CUDA, the three ops that scale each tensor by its own 0-dim scalar cannot use torch's fused
multi-tensor kernels (those need lists of equal shapes) and launch a kernel per tensor, as
the ``masked_fill_`` does; a kernel over the flattened bucket would remove them.

Skipping a step on the device: when ``optimizer.found_inf`` is set (a 0-dim tensor, the
attribute torch's fused AdamW reads), a nonzero value leaves the parameters, both moments and
the step counts exactly as they were, with no host read. The gradients of such a step are
zeroed in place first (NaN times zero is NaN), so that the update can be blended out
arithmetically; on a step that is taken they are left bit for bit as they were.

DeepSpeed: :func:`.engines.deepspeed_engine.check_lamb` passes this optimizer to DeepSpeed as
a client optimizer at ZeRO stage 0, in fp32 or bf16 (DeepSpeed then steps per-tensor fp32
masters), and refuses LAMB at stages 1-3, where DeepSpeed hands the optimizer flat shards that
cut across tensors. DeepSpeed's own ``FusedLamb`` is not used anywhere: CUDA-only, compiled
with nvcc at run time, not supported by ZeRO either, a Python loop of three kernels per
tensor, and a different update (bias correction after the trust ratio, which it clamps to
[0.01, 10]); its docstring there has the details.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Lamb(torch.optim.Optimizer):
    skips_on_found_inf = True
    """``step()`` honours ``found_inf`` on the device, so the engines need no host check before it."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        max_trust_ratio: float = 10.0,
    ):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"LAMB needs non-negative lr, eps and weight_decay (got {lr}, {eps}, {weight_decay})")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"LAMB betas must lie in [0, 1), got {betas}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_trust_ratio=max_trust_ratio)
        super().__init__(params, defaults)
        self._cpu_buffers: dict[Tensor, Tensor] = {}

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("_cpu_buffers", {})  # unpickled optimizers come without it
        # load_state_dict casts floating state to the parameter's dtype and leaves "step" as
        # saved (a Python int before the multi-tensor version): keep all of it fp32, on the
        # parameter's device, where the step uses it without host reads.
        for param, param_state in self.state.items():
            for key, value in param_state.items():
                param_state[key] = torch.as_tensor(value, dtype=torch.float32, device=param.device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(
                        step=torch.zeros((), dtype=torch.float32, device=p.device),
                        exp_avg=torch.zeros_like(p, dtype=torch.float32),
                        exp_avg_sq=torch.zeros_like(p, dtype=torch.float32),
                    )
            states = [self.state[p] for p in params]
            tensors = [params, [p.grad for p in params]] + [[s[k] for s in states] for k in ("exp_avg", "exp_avg_sq", "step")]
            for (device, _), (bucket, _) in self._group_tensors_by_device_and_dtype(tensors).items():
                skip = None if found_inf is None else found_inf.to(device, non_blocking=True) != 0
                buffers = self._update_buffers(bucket[0]) if device.type == "cpu" else None
                _lamb(*bucket, buffers, skip=skip, lr=group["lr"], betas=group["betas"], eps=group["eps"],
                      weight_decay=group["weight_decay"], max_trust_ratio=group["max_trust_ratio"])
        return loss

    def _update_buffers(self, params: list[Tensor]) -> list[Tensor]:
        # CUDA's caching allocator hands the update buffer's memory back every step. A CPU
        # allocation this large returns to the OS when freed and page-faults when written again:
        # over a third of BERT-base's step on a 2-core CPU. So on a CPU the buffer persists,
        # outside the state (it is scratch, never saved), at the cost of an fp32 copy of the
        # parameters between steps.
        for p in params:
            if p not in self._cpu_buffers:
                self._cpu_buffers[p] = torch.empty_like(p, dtype=torch.float32)
        return [self._cpu_buffers[p] for p in params]


def _lamb(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], steps: list[Tensor],
    buffers: list[Tensor] | None, *, skip: Tensor | None, lr: float, betas: tuple[float, float], eps: float, weight_decay: float, max_trust_ratio: float,
) -> None:
    """One LAMB step over tensors of one device and dtype (moments and steps fp32), the update
    computed in ``buffers`` when given, else in fresh memory."""
    beta1, beta2 = betas
    low_precision = params[0].dtype != torch.float32
    weights = [p.float() for p in params] if low_precision else params
    grads = [g.float() for g in grads] if low_precision else grads

    if skip is None:
        keep = 1.0
        decay1, decay2 = beta1, beta2
    else:
        # Zero the gradients of a skipped step, then let the moments decay by exactly 1.
        for g in grads:
            g.masked_fill_(skip, 0.0)
        keep = (~skip).float()
        decay1, decay2 = 1 - (1 - beta1) * keep, 1 - (1 - beta2) * keep
    # A list, not `keep` itself: `_foreach_add_(tensors, tensor)` parses a 0-dim tensor as a Scalar (a host read).
    torch._foreach_add_(steps, [keep] * len(steps))
    torch._foreach_mul_(exp_avgs, decay1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, decay2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

    # With c = 1 - β^t per tensor, a = c1/√c2 and eps' = eps·√c2, the update is u = r / a where
    # r = m / (√v + eps') + a·wd·w: vectors of per-tensor scalars instead of bias-corrected
    # copies of the moments, and one full-size buffer. The trust ratio ‖w‖/‖u‖ is a‖w‖/‖r‖.
    # A skipped first step has t = 0: its update is blended out but must stay finite, hence t >= 1.
    t = torch.stack(steps).clamp_(min=1)
    c1, c2 = _bias_correction(beta1, t), _bias_correction(beta2, t)
    a = c1 / c2.sqrt()
    if buffers is None:
        r = torch._foreach_sqrt(exp_avg_sqs)
    else:
        r = buffers
        torch._foreach_copy_(r, exp_avg_sqs)
        torch._foreach_sqrt_(r)
    torch._foreach_add_(r, (eps * c2.sqrt()).unbind())
    torch._foreach_reciprocal_(r)
    torch._foreach_mul_(r, exp_avgs)
    if weight_decay:
        torch._foreach_addcmul_(r, weights, (a * weight_decay).unbind())

    weight_norm = torch.stack(torch._foreach_norm(weights))
    r_norm = torch.stack(torch._foreach_norm(r))
    trust = torch.where((weight_norm > 0) & (r_norm > 0), (a * weight_norm / r_norm).clamp_(max=max_trust_ratio), 1.0)
    torch._foreach_addcmul_(weights, r, (trust * (-lr * keep) / a).unbind())
    if low_precision:
        torch._foreach_copy_(params, weights)


def _bias_correction(beta: float, t: Tensor) -> Tensor:
    """1 - β^t as -expm1(t·ln β): in fp32 the subtraction cancels (1e-5 off at t = 1 for β = 0.999)."""
    return -torch.expm1(t * math.log(beta)) if beta > 0 else torch.ones_like(t)
