"""LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning") in plain torch.

Runs on any device, so DeepSpeed never has to JIT-compile its CUDA-only fused LAMB. Adam
moments with bias correction give a per-tensor update ``u = m̂ / (√v̂ + eps) + wd·w``; each
tensor then moves by ``lr · ‖w‖ / ‖u‖ · u`` (trust ratio 1 when either norm is zero).
The trust ratio is per parameter tensor, which is why :mod:`fastbert.train.engines.deepspeed_engine`
refuses LAMB where DeepSpeed flattens parameters into shards.
"""

from __future__ import annotations

import torch


class Lamb(torch.optim.Optimizer):
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

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad.float()
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(param, dtype=torch.float32)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)

                step = state["step"]
                m_hat = exp_avg / (1 - beta1**step)
                v_hat = exp_avg_sq / (1 - beta2**step)
                weights = param.float()
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(weights, alpha=group["weight_decay"])

                weight_norm = weights.norm()
                update_norm = update.norm()
                trust = torch.where(
                    (weight_norm > 0) & (update_norm > 0),
                    (weight_norm / update_norm).clamp(max=group["max_trust_ratio"]),
                    torch.ones_like(weight_norm),
                )
                param.copy_(weights - group["lr"] * trust * update)
        return loss
