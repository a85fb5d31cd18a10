"""`deepspeed --num_gpus 2 --module fastbert finetune` (CPU ranks, gloo) against one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastbert.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = 256  # eight global batches of 32: every rank gets whole batches of 16


def _without_dropout(minilm_dir: Path, target: Path) -> Path:
    """MiniLM with dropout off (the ranks' dropout draws differ from one process's), weights linked."""
    target.mkdir()
    for source in minilm_dir.iterdir():
        if source.name != "config.json" and source.is_file():
            (target / source.name).symlink_to(source)
    config = json.loads((minilm_dir / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_match_one_process(minilm_dir, shared_data, tmp_path, deepspeed_launch, stage):
    init = _without_dropout(minilm_dir, tmp_path / "init")

    def args(out: Path, batch_size: int, *extra: str) -> list[str]:
        return ["finetune", "--task", "cola", "--data-dir", str(shared_data / "cola"), "--init", str(init),
                "--out", str(out), "--max-seq-len", "64", "--seed", "3", "--epochs", "2", "--lr", "1e-4",
                "--max-train-examples", str(EXAMPLES), "--batch-size", str(batch_size), *extra]

    assert main(args(tmp_path / "single", 32)) == 0
    deepspeed_launch(args(tmp_path / "zero", 16, "--deepspeed", str(REPO / f"configs/deepspeed/zero{stage}.json")))

    single, zero = (json.loads((tmp_path / run / "results.json").read_text())["runs"][0] for run in ("single", "zero"))
    for one, two in zip(single["epochs"], zero["epochs"], strict=True):
        assert two["train_steps"] == one["train_steps"] == EXAMPLES // 32
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
        for split, metrics in one["eval"].items():
            assert two["eval"][split] == pytest.approx(metrics, abs=1e-6)
    assert zero["best"]["epoch"] == single["best"]["epoch"]

    transformers = pytest.importorskip("transformers")
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "zero" / "model")
    assert model.num_labels == 2
