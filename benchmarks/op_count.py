"""Count the ops a piece of code dispatches, by name, views and aliases apart, and the bytes they touch.

On a GPU most non-view aten ops launch at least one kernel, so on a CPU this count is what
the host would pay for (CONVENTIONS.md, section 4). Ops are seen below autograd and after
composite decompositions, one count per dispatched op (a ``_foreach_*`` op over 200
tensors counts once)::

    with OpCounter() as ops:
        optimizer.step()
    ops.total, ops.by_op().most_common(5), ops.counts["aten._local_scalar_dense.default"], ops.bytes

``bytes`` adds up the sizes of every tensor an op reads, writes in place and returns fresh
(an in-place ``add_`` reads two tensors and writes one): the memory traffic of a machine
without caches, which is what a memory-bound step on large tensors pays.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# Metadata-only ops whose schemas do not declare an alias (reshape of a fresh result).
NOT_DECLARED_VIEWS = frozenset({torch.ops.aten._unsafe_view.default})
# record_function markers (Optimizer.step opens one): bookkeeping, no device work.
IGNORED_NAMESPACES = frozenset({"profiler"})


def is_view(func: torch._ops.OpOverload) -> bool:
    """True for ops that only make a new view or alias of an input: they launch nothing."""
    return func.is_view or func in NOT_DECLARED_VIEWS


def _nbytes(tree) -> int:
    return sum(t.nbytes for t in tree_leaves(tree) if isinstance(t, torch.Tensor))


def traffic(func: torch._ops.OpOverload, args: tuple, kwargs: dict, out) -> int:
    """Bytes read (tensor arguments but ``out=``), written (mutable arguments) and returned fresh."""
    schema = func._schema
    bound = {**dict(zip((a.name for a in schema.arguments), args)), **kwargs}
    read = sum(_nbytes(bound.get(a.name)) for a in schema.arguments if not a.is_out)
    written = sum(_nbytes(bound.get(a.name)) for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write)
    outs = out if len(schema.returns) > 1 else (out,)
    fresh = sum(_nbytes(o) for o, r in zip(outs, schema.returns) if r.alias_info is None)
    return read + written + fresh


class OpCounter(TorchDispatchMode):
    """A dispatch mode that counts every non-view op by overload name (``aten.add_.Tensor``)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not is_view(func) and func.namespace not in IGNORED_NAMESPACES:
            self.counts[str(func)] += 1
            self.bytes += traffic(func, args, kwargs, out)
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def by_op(self) -> Counter[str]:
        """Counts summed over overloads (``aten.add_``), which is how a report reads best."""
        merged: Counter[str] = Counter()
        for name, count in self.counts.items():
            merged[name.rsplit(".", 1)[0]] += count
        return merged
