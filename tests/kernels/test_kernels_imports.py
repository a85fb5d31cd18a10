"""fastbert.kernels imports only torch and triton, both installed and from a plain source tree.

Each check runs in a fresh interpreter, so what it sees in sys.modules is what the import
itself pulled in, not what earlier tests left behind.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A source tree without any install: the repository first on sys.path and the editable
# finder (setuptools' __editable__ meta-path hook) out of the way, as on a machine whose old
# pip could not install the project and falls back to PYTHONPATH.
SOURCE_TREE = f"""
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.path.insert(0, {str(REPO)!r})
"""

IMPORT_EVERY_KERNEL_MODULE = """
import importlib, json, pkgutil, sys
{setup}
import torch, triton, triton.language  # their own import closure is allowed
before = set(sys.modules)
import fastbert.kernels
walked = [m.name for m in pkgutil.walk_packages(fastbert.kernels.__path__, "fastbert.kernels.")]
for name in walked:
    importlib.import_module(name)
print(json.dumps({{"file": fastbert.kernels.__file__, "walked": walked, "new": sorted(set(sys.modules) - before)}}))
"""


def run_python(code: str, cwd: Path) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # the triton_* modules decorate kernels on import
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def allowed(module: str) -> bool:
    top = module.partition(".")[0]
    in_kernels = module in ("fastbert", "fastbert.kernels") or module.startswith("fastbert.kernels.")
    return in_kernels or top in ("torch", "triton") or top in sys.stdlib_module_names


@pytest.mark.parametrize("layout", ["installed", "source tree"])
def test_kernels_import_only_torch_and_triton(layout: str, tmp_path: Path):
    if layout == "installed":
        try:
            importlib.metadata.distribution("fastbert")
        except importlib.metadata.PackageNotFoundError:
            pytest.skip("fastbert is not installed (pip install -e .)")
    setup = SOURCE_TREE if layout == "source tree" else ""
    # cwd outside the repository: `python -c` puts the cwd on sys.path.
    result = run_python(IMPORT_EVERY_KERNEL_MODULE.format(setup=setup), cwd=tmp_path)

    if layout == "source tree":
        assert Path(result["file"]).is_relative_to(REPO), result["file"]
    expected = {f"fastbert.kernels.{p.stem}" for p in (REPO / "kernels").glob("*.py") if p.stem != "__init__"}
    assert set(result["walked"]) == expected
    # Anything else (fastbert.model, fastbert.errors, a third-party package) breaks the layering.
    assert [m for m in result["new"] if not allowed(m)] == []


def test_import_fastbert_stays_light(tmp_path: Path):
    code = f"""
import json, sys
{SOURCE_TREE}
before = set(sys.modules)
import fastbert
print(json.dumps({{"new": sorted(set(sys.modules) - before)}}))
"""
    assert run_python(code, cwd=tmp_path)["new"] == ["fastbert"]


def test_the_checkout_root_leaves_the_name_kernels_to_an_installed_package(tmp_path: Path):
    # From the checkout's root (python -m pytest, the benchmarks), kernels/ is importable as a
    # top-level "kernels" and would shadow Hugging Face's package of that name, which
    # transformers >= 5.25 imports (its BERT then failed to import). A stand-in for that package
    # sits right after the checkout on sys.path; the bare name must reach it, while
    # fastbert.kernels stays fastbert's.
    site = tmp_path / "site"
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text("from kernels.layer import LAYER\n")
    (site / "kernels" / "layer.py").write_text("LAYER = 'hub kernels'\n")
    code = f"""
import json, sys
sys.path[:0] = [{str(REPO)!r}, {str(site)!r}]
import kernels
import fastbert.kernels
print(json.dumps({{"bare": kernels.__file__, "layer": getattr(kernels, "LAYER", None),
                   "ours": fastbert.kernels.__file__, "ours_has_ops": hasattr(fastbert.kernels, "layer_norm"),
                   "stray": sorted(n for n in sys.modules if n.startswith("kernels.") and n != "kernels.layer")}}))
"""
    result = run_python(code, cwd=tmp_path)
    assert Path(result["bare"]).is_relative_to(site) and result["layer"] == "hub kernels"
    assert result["stray"] == []  # none of this folder's submodules passes for one of the package's
    assert Path(result["ours"]).is_relative_to(REPO) and result["ours_has_ops"]
