"""`fastbert finetune` end to end: a short CoLA run from MiniLM, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from fastbert.cli import main


def _cola_args(shared_data, minilm_dir, out, *extra):
    return ["finetune", "--task", "cola", "--data-dir", str(shared_data / "cola"), "--init", str(minilm_dir),
            "--out", str(out), "--max-seq-len", "64", "--seed", "1", *extra]


def test_cola_finetune_beats_majority_class_and_exports_a_transformers_model(minilm_dir, shared_data, tmp_path, capsys):
    # 1500 examples, three epochs at lr 2e-4 (about 35 s on 2 cores): MiniLM stays on the
    # majority class for its first ~100 steps whatever the data size, so the number of
    # steps is what matters. Seeds 1-4 gave in-domain MCC 0.085-0.136 here; one epoch of
    # 3000 examples gave 0 for two seeds of four.
    out = tmp_path / "run"
    argv = _cola_args(shared_data, minilm_dir, out, "--epochs", "3", "--max-train-examples", "1500", "--batch-size", "32", "--lr", "2e-4")
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    (run,) = results["runs"]
    assert set(run["best"]["eval"]) == {"in_domain", "out_of_domain"}
    assert set(run["best"]["eval"]["in_domain"]) == {"mcc", "accuracy"}
    assert run["best"]["eval"]["in_domain"]["mcc"] > 0  # the majority class scores exactly 0
    assert [e["train_steps"] for e in run["epochs"]] == [-(-1500 // 32)] * 3 and run["train_tokens_per_s"] > 0
    assert results["summary"]["in_domain"]["mcc"]["mean"] == run["best"]["eval"]["in_domain"]["mcc"]
    assert "in_domain" in capsys.readouterr().out

    transformers = pytest.importorskip("transformers")
    hf = transformers.BertForSequenceClassification.from_pretrained(out / "model").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out / "model")
    sentences = ["The sailors rode the breeze clear of the rocks.", "The more books I read."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    from fastbert.model import BertForSequenceClassification

    ours = BertForSequenceClassification.from_pretrained(out / "model").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(**batch).logits, ours(**batch).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_cola_finetune_beats_chance(minilm_dir, shared_data, tmp_path):
    # Three epochs on 4000 examples at the benchmark's lr.
    argv = _cola_args(shared_data, minilm_dir, tmp_path, "--epochs", "3", "--max-train-examples", "4000", "--lr", "1e-4")
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"][0]["best"]["eval"]["in_domain"]["mcc"] > 0


def test_bad_row_exits_2_naming_file_and_line(minilm_dir, tmp_path, capsys):
    data = tmp_path / "cola"
    data.mkdir()
    good = "gj04\t1\t\tThe sailors rode the breeze.\n"
    (data / "in_domain_train.tsv").write_text(good * 3 + "gj04\tyes\t\tBad label here.\n")
    (data / "in_domain_dev.tsv").write_text(good)
    (data / "out_of_domain_dev.tsv").write_text(good)
    code = main(["finetune", "--task", "cola", "--data-dir", str(data), "--init", str(minilm_dir), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"fastbert: error: {data / 'in_domain_train.tsv'}:4: label 'yes' is not one of 0, 1"


def test_missing_files_exit_2(minilm_dir, tmp_path, capsys):
    code = main(["finetune", "--task", "rte", "--data-dir", str(tmp_path), "--init", str(minilm_dir), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "rte: missing" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model_dir(minilm_dir, tmp_path_factory):
    """A randomly initialised 2-layer BERT with MiniLM's tokenizer: exercises the heads quickly."""
    from fastbert.model import BertConfig, BertModel
    from fastbert.tokenizer import load_tokenizer

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(BertConfig.preset("tiny", max_position_embeddings=128)).save_pretrained(path, tokenizer=load_tokenizer(minilm_dir))
    return path


def _run(task, data_dir, init, out, *extra):
    argv = ["finetune", "--task", task, "--data-dir", str(data_dir), "--init", str(init), "--out", str(out),
            "--epochs", "2", "--batch-size", "4", "--max-seq-len", "64", "--lr", "1e-3", *extra]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("task", ["squad", "squad_v2"])
def test_span_task_runs_and_scores(tiny_model_dir, tmp_path, task, write_squad):
    version_2 = task == "squad_v2"
    suffix = "v2.0" if version_2 else "v1.1"
    write_squad(tmp_path / f"train-{suffix}.json", version_2)
    write_squad(tmp_path / f"dev-{suffix}.json", version_2)
    results = _run(task, tmp_path, tiny_model_dir, tmp_path / "out")
    dev = results["runs"][0]["best"]["eval"]["dev"]
    assert set(dev) == {"exact_match", "f1"} and 0 <= dev["exact_match"] <= dev["f1"] <= 100
    assert (tmp_path / "out" / "model" / "config.json").is_file()


def test_multiple_choice_and_seeds(tiny_model_dir, tmp_path, swag_header):
    rows = [f"{i},v{i},0,x,Person {i} walks.,Then they,gold,sit.,fly.,swim.,sing.,{i % 4}\n" for i in range(6)]
    for name in ("train.csv", "val.csv"):
        (tmp_path / name).write_text(swag_header + "".join(rows))
    results = _run("swag", tmp_path, tiny_model_dir, tmp_path / "out", "--seeds", "3,4")
    assert [run["seed"] for run in results["runs"]] == [3, 4]
    accuracy = results["summary"]["dev"]["accuracy"]
    assert accuracy["values"] == [run["best"]["eval"]["dev"]["accuracy"] for run in results["runs"]]
    assert (tmp_path / "out" / "seed_3" / "model").is_dir() and (tmp_path / "out" / "seed_4" / "model").is_dir()


HOST_SYNC_EXAMPLES, HOST_SYNC_EPOCHS, LOG_EVERY = 48, 2, 1000  # batch size 1: 96 optimizer steps (= micro-steps)
DEV_ROWS = {"in_domain_dev.tsv": 8, "out_of_domain_dev.tsv": 6}
READS_PER_LOG = 4
"""Slack per logging step: the loop's one read of its summed metrics (.tolist), the engine's
diverged-step check (.tolist) and the grad norm of the record (float); the same again when
an evaluation summarizes training, and once more for the final check."""
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu")


def _inside_collate(frame) -> bool:
    """Whether the read happens while a batch is built on the host (collate reads its own CPU
    tensors, e.g. BertInputs.from_flat's max position): no device is involved there."""
    while frame is not None:
        if frame.f_code.co_name == "collate" and frame.f_code.co_filename.endswith("finetune/collate.py"):
            return True
        frame = frame.f_back
    return False


def test_finetuning_reads_the_device_only_per_log_and_eval_batch(tiny_model_dir, tmp_path, monkeypatch):
    """No host sync per micro-step: a 96-step CoLA run (tiny model, batch size 1, log_every
    1000) reads tensors to the host a bounded number of times, whatever its number of steps."""
    import sys

    data = tmp_path / "cola"
    data.mkdir()
    rows = [f"gj04\t{i % 2}\t\tThe sailors rode breeze number {i}.\n" for i in range(HOST_SYNC_EXAMPLES)]
    (data / "in_domain_train.tsv").write_text("".join(rows))
    for name, count in DEV_ROWS.items():
        (data / name).write_text("".join(rows[:count]))
    reads: dict[str, int] = {}

    def counting(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if not _inside_collate(sys._getframe(1)):
                reads[name] = reads.get(name, 0) + 1
            return original(self, *args, **kwargs)

        return read

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    argv = ["finetune", "--task", "cola", "--data-dir", str(data), "--init", str(tiny_model_dir), "--out", str(tmp_path / "out"),
            "--epochs", str(HOST_SYNC_EPOCHS), "--batch-size", "1", "--max-seq-len", "64", "--lr", "1e-3",
            "--log-every", str(LOG_EVERY)]
    assert main(argv) == 0
    monkeypatch.undo()

    results = json.loads((tmp_path / "out" / "results.json").read_text())
    steps = sum(e["train_steps"] for e in results["runs"][0]["epochs"])
    assert steps == HOST_SYNC_EXAMPLES * HOST_SYNC_EPOCHS  # every micro-batch (of 1) is an optimizer step
    # Logging steps: ceil(96 / 1000) = 1, plus one per epoch (the loop logs before each evaluation).
    logs = -(-steps // LOG_EVERY) + HOST_SYNC_EPOCHS
    # Evaluation legitimately brings each eval batch's logits to the host once (.cpu() in
    # evaluate.predict); eval batches hold 2 x batch_size = 2 items.
    eval_batches = HOST_SYNC_EPOCHS * sum(-(-count // 2) for count in DEV_ROWS.values())
    # A per-micro-step read anywhere (loss.item() in the loop, float(grad_norm) or a
    # finiteness check per update in the engine) adds at least 96 and fails this.
    assert sum(reads.values()) <= logs * READS_PER_LOG + eval_batches, reads
    assert reads.get("item", 0) <= logs * READS_PER_LOG, reads
