"""Compile every kernel variant for an H100 (sm_90) on this CPU-only machine.

The interpreter runs kernels as Python, so it accepts code that Triton's compiler would
reject; compiling with the nvidia backend and ptxas bundled in the triton wheel catches
that without a GPU. Runs in a subprocess because TRITON_INTERPRET must be unset when the
kernel modules are imported.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

COMPILE_ALL = r'''
import itertools
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastbert.kernels import triton_bias_gelu, triton_embedding_layer_norm, triton_layer_norm, triton_update_verdict
from fastbert.kernels._utils import num_warps

FP32_POINTERS = {"mean_ptr", "rstd_ptr", "dsum_ptr", "dword_ptr", "dpos_ptr", "sums_ptr", "dw_sums_ptr", "db_sums_ptr", "dx_bias_sums_ptr", "dbias_sums_ptr",
                 "norms_ptr", "poison_ptr", "updates_ptr", "first_skipped_ptr", "total_ptr", "scale_ptr", "found_inf_ptr"}
INDEX_POINTERS = {"ids_ptr", "tt_ptr", "pos_ptr", "seed_ptr"}
FLOATS = {"eps", "dropout_p", "dropout_scale", "max_norm", "clip_eps"}
BLOCKS = {"BLOCK_R": 4, "BLOCK_H": 1024, "BLOCK_C": 1024, "BLOCK_T": 2, "BLOCK": 1024}

def arg_type(name):
    if name in FP32_POINTERS:
        return "*fp32"
    if name in INDEX_POINTERS:
        return "*i64"
    if name.endswith("_ptr"):
        return "*bf16"
    return "fp32" if name in FLOATS else "i32"

kernels = [getattr(m, n) for m in (triton_layer_norm, triton_bias_gelu, triton_embedding_layer_norm, triton_update_verdict)
           for n in dir(m) if n.endswith("_kernel")]
count = 0
for kernel in kernels:
    names = kernel.arg_names
    flags = [n for n in names if n.isupper() and n not in BLOCKS]
    for values in itertools.product([False, True], repeat=len(flags)):
        constants = {**{k: v for k, v in BLOCKS.items() if k in names}, **dict(zip(flags, values))}
        signature = {n: "constexpr" if n in constants else arg_type(n) for n in names}
        source = ASTSource(kernel, signature, {(names.index(k),): v for k, v in constants.items()})
        triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps(4096)})
        count += 1
print("compiled", count)
'''


def test_every_kernel_variant_compiles_for_sm90(tmp_path):
    pytest.importorskip("triton.backends.nvidia.compiler")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, not from an earlier cache
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run([sys.executable, "-c", COMPILE_ALL], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "compiled" in result.stdout
