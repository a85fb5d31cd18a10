"""HF datasets and Hub model ids, offline: a save_to_disk dataset, a cached model id, and the errors.

There is no network to the Hub here, so a subprocess runs with HF_HUB_OFFLINE=1 (read when
huggingface_hub is imported) against a Hub cache laid out by the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastbert.cli import main
from fastbert.errors import UserError
from fastbert.finetune.hub import resolve_init

REPO = Path(__file__).resolve().parents[2]
REVISION = "0123456789abcdef0123456789abcdef01234567"

RUNNER = r"""
import json, os, sys
from fastbert.cli import main
for argv in json.loads(os.environ["FASTBERT_TEST_RUNS"]):
    print("EXIT", main(argv), flush=True)
"""


def hub_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """A Hugging Face cache holding ``model_dir`` as ``repo_id`` at main, as `hf download` leaves it."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(model_dir, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def test_dataset_saved_to_disk_trains_with_its_class_names(tiny_bert_dir, tmp_path, finetune_cli, capsys):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
    sentences = ["a fine film", "a dull film", "great acting", "a boring plot", "loved it", "hated it"]
    train = {"sentence": sentences * 2, "label": [1, 0, 1, 0, 1, 0] * 2}
    test = {"sentence": sentences[:3], "label": [-1, -1, -1]}  # GLUE's test splits mark missing labels with -1
    saved = tmp_path / "sentiment"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(train, features=features),
        "validation": datasets.Dataset.from_dict(train, features=features),
        "test": datasets.Dataset.from_dict(test, features=features),
    }).save_to_disk(str(saved))
    out = tmp_path / "out"
    results = finetune_cli(out, "--task", "classification", "--dataset", saved, "--text-columns", "sentence",
                           "--predict-test", "--init", tiny_bert_dir)
    assert set(results["runs"][0]["best"]["eval"]["validation"]) == {"accuracy", "macro_f1"}
    assert json.loads((out / "model" / "config.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    lines = (out / "predictions" / "test.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 4
    assert {line.split("\t")[1] for line in lines[1:]} <= {"negative", "positive"}

    capsys.readouterr()
    assert main(["finetune", "--task", "classification", "--dataset", str(saved), "--text-columns", "sentence",
                 "--validation-split", "dev", "--init", str(tiny_bert_dir), "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err == f"fastbert: error: {saved}: no 'dev' split for validation; it has train, validation, test\n"


def test_hub_ids_offline(tiny_bert_dir, tmp_path):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    snapshot = hub_cache(cache, "fastbert-test/tiny-bert", tiny_bert_dir)
    cola = tmp_path / "cola"
    cola.mkdir()
    for name in ("in_domain_train.tsv", "in_domain_dev.tsv", "out_of_domain_dev.tsv"):
        (cola / name).write_text("gj04\t1\t\tKim left.\ngj04\t0\t*\tLeft Kim the.\n" * 4)
    common = ["--task", "cola", "--data-dir", str(cola), "--epochs", "1", "--batch-size", "4", "--max-seq-len", "32"]
    runs = [
        ["finetune", *common, "--init", "fastbert-test/tiny-bert", "--out", str(tmp_path / "cached")],
        ["finetune", *common, "--init", "bert-base-uncased", "--out", str(tmp_path / "absent")],
        ["finetune", "--task", "classification", "--dataset", "nyu-mll/glue", "--dataset-config", "sst2",
         "--text-columns", "sentence", "--init", str(tiny_bert_dir), "--out", str(tmp_path / "dataset")],
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "FASTBERT_TEST_RUNS": json.dumps(runs)}
    done = subprocess.run([sys.executable, "-c", RUNNER], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exits = [line for line in done.stdout.splitlines() if line.startswith("EXIT")]
    assert exits == ["EXIT 0", "EXIT 2", "EXIT 2"]
    assert json.loads((tmp_path / "cached" / "results.json").read_text())["init_dir"] == str(snapshot)
    errors = [line for line in done.stderr.splitlines() if line.startswith("fastbert: error:")]
    assert errors[0] == (
        f"fastbert: error: bert-base-uncased: not a local directory, and not in the Hugging Face cache ({cache}) while offline "
        "(HF_HUB_OFFLINE); download it where there is network (`hf download bert-base-uncased`) "
        "or pass --init a directory holding config.json, the weights and the tokenizer"
    )
    if _importable("datasets"):
        assert errors[1].startswith("fastbert: error: dataset 'nyu-mll/glue' could not be loaded (")
        assert errors[1].endswith("without network, save it once with save_to_disk and pass that directory to --dataset")
    else:
        assert errors[1] == "fastbert: error: --dataset needs the datasets library: pip install 'fastbert[datasets]'"


def test_paths_that_are_not_hub_ids(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no such model directory"):
        resolve_init(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no such model directory"):
        resolve_init("../models/bert")
    file = tmp_path / "config.json"
    file.write_text("{}")
    with pytest.raises(UserError, match="no such model directory"):
        resolve_init(str(file))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # as without the hub extra
    with pytest.raises(UserError, match=r"a Hub model id needs huggingface_hub: pip install 'fastbert\[hub\]'"):
        resolve_init("bert-base-uncased")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
