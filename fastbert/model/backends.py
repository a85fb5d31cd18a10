"""Which implementations a model's fused ops and attention run on: chosen at run time, never saved.

A model reads ``FASTBERT_KERNELS`` and ``FASTBERT_ATTENTION`` once, when it is built, into
one :class:`Backends` value that all its modules share; :meth:`Backends.use` changes it
later (benchmarks force the torch reference this way). The choice is a property of the
run, not of the weights, so it is not part of ``config.json``: a model saved under
``FASTBERT_KERNELS=torch`` reloads with whatever the next run asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

import torch

from .. import kernels
from .attention import BACKENDS as ATTENTION_BACKENDS
from .attention import requested_attention_backend, resolve_attention_backend


@dataclass(eq=False)
class Backends:
    """The requested kernel and attention backends ("auto" picks per device), resolved once per device."""

    kernels: str = "auto"
    """"auto" (Triton on CUDA tensors, the torch reference elsewhere), "triton" or "torch"."""
    attention: str = "auto"
    """"auto", "flash_attn", "torch_varlen" or "sdpa" (see fastbert.model.attention)."""
    _ops: dict[str, ModuleType] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.use(self.kernels, self.attention)

    @classmethod
    def from_environment(cls) -> "Backends":
        """What ``FASTBERT_KERNELS`` / ``FASTBERT_ATTENTION`` ask for ("auto" when unset)."""
        return cls(kernels.requested_backend(), requested_attention_backend())

    def use(self, kernels: str | None = None, attention: str | None = None) -> None:
        """Switch backends in place (every module of the model sees the change)."""
        kernel_name = (kernels or self.kernels).strip().lower()
        attention_name = (attention or self.attention).strip().lower()
        if kernel_name not in _KERNEL_BACKENDS:
            raise ValueError(f"kernel backend {kernel_name!r} is unknown; expected one of {', '.join(_KERNEL_BACKENDS)}")
        if attention_name not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend {attention_name!r} is unknown; expected one of {', '.join(ATTENTION_BACKENDS)}")
        self.kernels, self.attention = kernel_name, attention_name
        self._ops.clear()

    def __getstate__(self) -> dict:
        # The per-device cache holds modules, which neither deepcopy nor pickle can copy; a
        # copied model (copy.deepcopy, torch.save) looks its ops up again.
        return {**self.__dict__, "_ops": {}}

    def ops(self, device: torch.device) -> ModuleType:
        """The module implementing the fused ops for tensors on ``device`` (looked up once per device type)."""
        ops = self._ops.get(device.type)
        if ops is None:
            # "auto" was decided against the environment when the model was built: resolve it
            # for the device alone, never by reading FASTBERT_KERNELS again.
            name = kernels.auto_backend(device) if self.kernels == "auto" else self.kernels
            ops = self._ops[device.type] = kernels.implementation(device, name)
        return ops

    def attention_for(self, device: torch.device, dropout_p: float, dtype: torch.dtype, varlen_layout: bool) -> str:
        return resolve_attention_backend(device, dropout_p, self.attention, dtype, varlen_layout)


_KERNEL_BACKENDS = kernels.BACKENDS
