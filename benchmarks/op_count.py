"""Count the ops a piece of code dispatches, by name, views and aliases apart.

On a GPU most non-view aten ops launch at least one kernel, so on a CPU this count is what
the host would pay for (CONVENTIONS.md, section 4). Ops are seen below autograd and after
composite decompositions, one count per dispatched op (a ``_foreach_*`` op over 200
tensors counts once)::

    with OpCounter() as ops:
        optimizer.step()
    ops.total, ops.counts.most_common(5), ops.counts["aten._local_scalar_dense.default"]
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Metadata-only ops whose schemas do not declare an alias (reshape of a fresh result).
NOT_DECLARED_VIEWS = frozenset({torch.ops.aten._unsafe_view.default})
# record_function markers (Optimizer.step opens one): bookkeeping, no device work.
IGNORED_NAMESPACES = frozenset({"profiler"})


def is_view(func: torch._ops.OpOverload) -> bool:
    """True for ops that only make a new view or alias of an input: they launch nothing."""
    return func.is_view or func in NOT_DECLARED_VIEWS


class OpCounter(TorchDispatchMode):
    """A dispatch mode that counts every non-view op by overload name (``aten.add_.Tensor``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not is_view(func) and func.namespace not in IGNORED_NAMESPACES:
            self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_op(self) -> Counter[str]:
        """Counts summed over overloads (``aten.add_``), which is how a report reads best."""
        merged: Counter[str] = Counter()
        for name, count in self.counts.items():
            merged[name.rsplit(".", 1)[0]] += count
        return merged
