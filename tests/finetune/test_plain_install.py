"""`pip install fastbert` with no extras: fine-tuning runs end to end and scores every metric.

A subprocess refuses to import any installed module that the base dependencies (and what
they require in turn) do not provide, as a plain install would lack it, then fine-tunes
CoLA (MCC), STS-B (Pearson, Spearman) and a generic CSV task (accuracy, macro F1), and
asks for the optional inputs, which must fail in one line naming their extra.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BLOCKER = r"""
import json, os, sys

# None in sys.modules is how Python marks a module as absent: import raises ModuleNotFoundError
# and importlib.util.find_spec answers None, exactly as for a module that is not installed.
for name in json.loads(os.environ["FASTBERT_TEST_BLOCKED"]):
    sys.modules[name] = None
for extra in ("sklearn", "scipy", "transformers", "datasets", "pyarrow"):  # the blocker must work, or this proves nothing
    try:
        __import__(extra)
    except ImportError:
        continue
    raise SystemExit(f"the import blocker let {extra} through")

from fastbert.cli import main
for argv in json.loads(os.environ["FASTBERT_TEST_RUNS"]):
    code = main(argv)
    print("EXIT", code, flush=True)
"""


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_closure() -> set[str]:
    """The distributions a plain install brings: pyproject's dependencies and theirs, recursively."""
    tomllib = pytest.importorskip("tomllib")
    requirements = pytest.importorskip("packaging.requirements")
    pending = list(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    closure: set[str] = set()
    while pending:
        requirement = requirements.Requirement(pending.pop())
        name = _normalized(requirement.name)
        if name in closure or (requirement.marker is not None and not requirement.marker.evaluate({"extra": ""})):
            continue
        try:
            pending.extend(importlib.metadata.requires(requirement.name) or [])
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (e.g. triton off Linux): nothing to import from it anyway
        closure.add(name)
    return closure


def blocked_modules() -> list[str]:
    """Installed top-level modules that no distribution of the base closure provides."""
    closure = base_closure()
    return sorted(
        module for module, dists in importlib.metadata.packages_distributions().items()
        if module != "fastbert" and not any(_normalized(d) in closure for d in dists)
    )


def _write_data(root: Path) -> dict[str, Path]:
    cola = root / "cola"
    cola.mkdir()
    rows = "".join(f"gj04\t{i % 2}\t\t{s}\n" for i, s in enumerate(["Kim left.", "Left Kim the.", "We ate.", "Ate we it the."] * 3))
    for name in ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv"):
        (cola / name).write_text(rows)
    stsb = root / "stsb"
    stsb.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    pairs = "".join(f"{i}\tnews\tf\t2012\t{i}\tnone\tnone\tA man plays {w}.\tA man is playing {w}.\t{i * 0.5:.3f}\n"
                    for i, w in enumerate(["guitar", "piano", "chess", "golf", "cards", "drums"]))
    for name in ("train.tsv", "dev.tsv"):
        (stsb / name).write_text(header + pairs)
    csv_file = root / "reviews.csv"
    csv_file.write_text("review,stars\n" + "".join(f"review number {i},{'good' if i % 2 else 'bad'}\n" for i in range(12)))
    parquet_file = root / "reviews.parquet"
    parquet_file.write_bytes(b"PAR1")  # never parsed: the missing extra is reported first
    return {"cola": cola, "stsb": stsb, "csv": csv_file, "parquet": parquet_file}


def test_finetune_needs_only_the_base_dependencies(tiny_bert_dir, tmp_path):
    data = _write_data(tmp_path)
    common = ["--init", str(tiny_bert_dir), "--epochs", "1", "--batch-size", "4", "--max-seq-len", "32"]
    custom = ["--task", "classification", "--text-columns", "review", "--label-column", "stars"]
    runs = [
        ["finetune", "--task", "cola", "--data-dir", str(data["cola"]), "--out", str(tmp_path / "cola"), *common],
        ["finetune", "--task", "stsb", "--data-dir", str(data["stsb"]), "--out", str(tmp_path / "stsb"), *common],
        ["finetune", *custom, "--train-file", str(data["csv"]), "--validation-file", str(data["csv"]),
         "--out", str(tmp_path / "csv"), *common],
        ["finetune", *custom, "--train-file", str(data["parquet"]), "--validation-file", str(data["csv"]),
         "--out", str(tmp_path / "parquet"), *common],
        ["finetune", *custom, "--dataset", str(tmp_path), "--out", str(tmp_path / "dataset"), *common],
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "FASTBERT_TEST_BLOCKED": json.dumps(blocked_modules()),
        "FASTBERT_TEST_RUNS": json.dumps(runs),
    }
    done = subprocess.run([sys.executable, "-c", BLOCKER], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("EXIT")] == ["EXIT 0"] * 3 + ["EXIT 2"] * 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("fastbert: error:")]
    assert errors == [
        f"fastbert: error: {data['parquet']}: reading parquet needs pyarrow: pip install 'fastbert[parquet]'",
        "fastbert: error: --dataset needs the datasets library: pip install 'fastbert[datasets]'",
    ]
    metrics = {
        name: set(json.loads((tmp_path / name / "results.json").read_text())["runs"][0]["best"]["eval"][split])
        for name, split in (("cola", "in_domain"), ("stsb", "dev"), ("csv", "validation"))
    }
    assert metrics == {"cola": {"mcc", "accuracy"}, "stsb": {"pearson", "spearman"}, "csv": {"accuracy", "macro_f1"}}
