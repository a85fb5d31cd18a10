"""The update's verdict in one Triton launch against the torch reference, and against what
the engine computed before (clip_grad_norm_'s norm and factor)."""

import math

import pytest
import torch

from fastbert import kernels
from fastbert.kernels import reference, triton_ops

INF, NAN = math.inf, math.nan


def state(window_poison: float = 0.0, updates: float = 0.0, first_skipped=(INF, INF)) -> dict[str, torch.Tensor]:
    return {
        "window_poison": torch.tensor(window_poison),
        "updates": torch.tensor(updates),
        "first_skipped": torch.tensor(first_skipped, dtype=torch.float32),
    }


def run(impl, norms: torch.Tensor, max_norm: float, start: dict[str, torch.Tensor]):
    """(outputs, the state tensors after the call) for one implementation, on copies of ``start``."""
    after = {name: t.clone() for name, t in start.items()}
    outputs = impl.update_verdict(norms.clone(), after["window_poison"], after["updates"], after["first_skipped"], max_norm)
    return outputs, after


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0.0, equal_nan=True)


CASES = {
    "finite, clipped": (torch.rand(200) * 3, 1.0, state(updates=6.0)),
    "finite, under the limit": (torch.rand(7) * 1e-3, 1.0, state(updates=2.0, first_skipped=(INF, 2.0))),
    "no clipping": (torch.rand(130), INF, state()),
    "more norms than one block": (torch.rand(2500), 3.0, state(updates=1.0)),
    "one total norm": (torch.tensor([2.5]), 1.0, state(updates=41.0)),
    "non-finite loss": (torch.rand(3), 1.0, state(window_poison=NAN, updates=4.0)),
    "infinite norm": (torch.tensor([1.0, INF, 2.0]), 1.0, state(updates=9.0, first_skipped=(INF, 3.0))),
    "NaN norm, earlier skips kept": (torch.tensor([NAN, 1.0]), 1.0, state(updates=9.0, first_skipped=(5.0, 3.0))),
    "both, first skip": (torch.tensor([NAN]), 0.5, state(window_poison=NAN)),
}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_the_reference(case, device):
    """On the CPU the interpreter runs the kernel; on a GPU, the compiled kernel (NaN tests
    and comparisons must survive the compiler)."""
    norms, max_norm, start = CASES[case]
    norms, start = norms.to(device), {name: t.to(device) for name, t in start.items()}
    (total, scale, found_inf), after = run(triton_ops, norms, max_norm, start)
    (ref_total, ref_scale, ref_found_inf), ref_after = run(reference, norms, max_norm, start)
    for got, want in [(total, ref_total), (scale, ref_scale), (found_inf, ref_found_inf), *zip(after.values(), ref_after.values())]:
        assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
        assert_same(got, want)


@pytest.mark.parametrize("impl", [triton_ops, reference], ids=["triton", "torch"])
def test_the_verdict_is_what_clip_grad_norm_and_the_skip_rule_give(impl):
    torch.manual_seed(0)
    grads = [torch.randn(n) for n in (5, 300, 1, 77)]
    norms = torch.stack(torch._foreach_norm(grads))
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    expected_norm = torch.nn.utils.clip_grad_norm_(params, 2.0)  # scales the grads by 2 / (norm + 1e-6)

    (total, scale, found_inf), after = run(impl, norms, 2.0, state(updates=11.0))
    assert_same(total, expected_norm)
    for p, g in zip(params, grads):
        torch.testing.assert_close(g / scale, p.grad, rtol=1e-6, atol=1e-7)
    assert found_inf.item() == 0.0
    assert after["updates"].item() == 12.0 and after["first_skipped"].tolist() == [INF, INF]

    (_, _, found_inf), after = run(impl, norms, 2.0, state(window_poison=NAN, updates=11.0))
    assert found_inf.item() == 1.0, "a non-finite loss in the window must skip the update"
    assert after["first_skipped"].tolist() == [12.0, 12.0], "the skipped step is named, per cause"
    assert after["window_poison"].item() == 0.0, "the window's record is consumed"


def test_one_launch_on_the_triton_path():
    from collections import Counter

    from benchmarks.op_count import OpCounter
    from benchmarks.step_ops import counting_triton_launches

    launches, norms, start = Counter(), torch.rand(200), state(updates=3.0)
    with counting_triton_launches(launches), OpCounter() as ops:
        triton_ops.update_verdict(norms, start["window_poison"], start["updates"], start["first_skipped"], 1.0)
    assert sum(launches.values()) == 1
    assert set(ops.by_op()) <= {"aten.empty"}, ops.by_op()  # the results' one allocation, nothing launched
    with OpCounter() as ref_ops:
        reference.update_verdict(norms, start["window_poison"], start["updates"], start["first_skipped"], 1.0)
    assert ref_ops.total >= 10  # what the launch replaces


def test_the_public_op_dispatches_by_backend():
    start = state()
    out = kernels.update_verdict(torch.tensor([3.0, 4.0]), *start.values(), 1.0, backend="triton")
    assert out[0].item() == pytest.approx(5.0) and out[1].item() == pytest.approx(5.0 + 1e-6)
    out = kernels.update_verdict(torch.tensor([3.0, 4.0]), *start.values(), 1.0, backend="torch")
    assert out[0].item() == pytest.approx(5.0)
    assert start["updates"].item() == 2.0


@pytest.mark.parametrize(
    "norms, start, message",
    [
        (torch.rand(2, 3), state(), "norms must be a non-empty contiguous vector"),
        (torch.rand(0), state(), "norms must be a non-empty contiguous vector"),
        (torch.rand(3), {**state(), "updates": torch.tensor(1.0, dtype=torch.float64)}, "updates must be fp32"),
        (torch.rand(3), {**state(), "first_skipped": torch.zeros(3)}, r"first_skipped must be fp32 of shape \(2,\)"),
    ],
)
def test_refuses_what_it_would_misread(norms, start, message):
    with pytest.raises(ValueError, match=message):
        triton_ops.update_verdict(norms, start["window_poison"], start["updates"], start["first_skipped"], 1.0)
