"""The Triton implementations of the fused ops, with exactly the reference signatures.

:mod:`fastbert.kernels` dispatches here when the backend resolves to ``triton``; each op
lives in its own ``triton_<op>`` module (kernels, launcher, autograd Function, public
function). The prefix matters: a submodule named like a public op would replace that
function as an attribute of the package once imported.
"""

from ._utils import dropout_seeds, grad_sums_block
from .triton_bias_gelu import bias_gelu
from .triton_embedding_layer_norm import embedding_layer_norm
from .triton_layer_norm import layer_norm
from .triton_update_verdict import update_verdict

__all__ = ["embedding_layer_norm", "bias_gelu", "layer_norm", "dropout_seeds", "grad_sums_block", "update_verdict"]
