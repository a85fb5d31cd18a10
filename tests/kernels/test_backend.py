"""Which implementation runs: FASTBERT_KERNELS / explicit backend resolution and dispatch.

A model's choice (``model.backends``) is tested in tests/model/test_backends.py."""

import pytest
import torch

from fastbert import kernels
from fastbert.kernels import ENV_VAR, resolve_backend

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("env, device, expected", [
    (None, CPU, "torch"),
    ("auto", CPU, "torch"),
    ("auto", CUDA, "triton"),  # decided from the device type alone; no CUDA query
    ("torch", CUDA, "torch"),
    ("triton", CPU, "triton"),  # allowed because the tests run under TRITON_INTERPRET=1
    (" Triton ", CPU, "triton"),
])
def test_environment_resolution(monkeypatch, env, device, expected):
    if env is None:
        monkeypatch.delenv(ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(ENV_VAR, env)
    assert resolve_backend(device) == expected


def test_explicit_override_beats_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "triton")
    assert resolve_backend(CPU, "torch") == "torch"


def test_environment_steers_an_auto_override(monkeypatch):
    # An explicit "auto" (the default) leaves the choice to the variable.
    monkeypatch.setenv(ENV_VAR, "torch")
    assert resolve_backend(CUDA, "auto") == "torch"


def test_bad_environment_value_names_the_variable_and_choices(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cudnn")
    with pytest.raises(ValueError, match=r"FASTBERT_KERNELS='cudnn' is not a kernel backend; expected one of auto, triton, torch"):
        resolve_backend(CPU)


def test_bad_override_names_the_config_key(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=r"backend='fast'"):
        resolve_backend(CPU, "fast")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        resolve_backend(CPU)


@pytest.mark.parametrize("env, expected_node", [
    ("triton", "LayerNormFunctionBackward"),
    ("torch", "NativeLayerNormBackward0"),
])
def test_public_op_dispatches_on_the_environment(monkeypatch, env, expected_node):
    monkeypatch.setenv(ENV_VAR, env)
    x = torch.randn(3, 64, requires_grad=True)
    out = kernels.layer_norm(x, torch.ones(64), torch.zeros(64), 1e-12)
    assert type(out.grad_fn).__name__ == expected_node


def test_importing_the_triton_modules_keeps_the_public_functions():
    from fastbert.kernels import triton_ops  # noqa: F401  (imports every op module)

    for name in ("embedding_layer_norm", "bias_gelu", "layer_norm"):
        assert callable(getattr(kernels, name)), name
