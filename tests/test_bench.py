"""``fastbert bench`` reporting on synthetic pytest-benchmark JSON: report, ratios, compare, plots, history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastbert import bench

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def entry(group: str, impl: str, median: float, role: str = "baseline", **info) -> dict:
    return {
        "group": group,
        "name": f"test[{impl}]",
        "fullname": f"benchmarks/test_x.py::test[{group}-{impl}]",
        "extra_info": {"impl": impl, "role": role, **info},
        "stats": {"median": median, "iqr": median / 10, "rounds": 5},
    }


def results(step_fastbert: float = 1.0, step_hf: float = 2.5, attention: float = 0.02) -> dict:
    work = dict(real_tokens=3000, sequences=32, flops=6e12, headline=True)
    return {
        "machine_info": {"fastbert_device": "test device", "versions": {"torch": "9.9"}},
        "commit_info": {"id": "abcdef1234567890", "dirty": False},
        "datetime": "2026-01-01T00:00:00+00:00",
        "benchmarks": [
            entry("ceilings", "bf16 matmul", 0.001, role="", ceiling="matmul", flops=1e12),
            entry("pretrain mini", "fastbert", step_fastbert, role="candidate", **work),
            entry("pretrain mini", "transformers-sdpa", step_hf, **work),
            entry("pretrain mini", "fastbert-graphs", step_fastbert / 2, role="variant", **work),
            entry("attention s128", "fastbert-auto", attention, role="candidate", real_tokens=2048),
            entry("attention s128", "eager", 0.05, real_tokens=2048),
        ],
    }


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_report_has_ratios_rates_mfu_and_plots(tmp_path: Path):
    source = write(tmp_path / "run.json", results())
    out = tmp_path / "report"
    assert bench.main(["--from-json", str(source), "--out", str(out), "--history", str(tmp_path / "h.jsonl")]) == 0

    report = (out / "report.md").read_text()
    headline = next(line for line in report.splitlines() if line.startswith("| pretrain mini | fastbert | transformers-sdpa"))
    # 2.5 s / 1.0 s; 3000 real tokens in 1.0 s vs 2.5 s.
    assert "| 2.50x |" in headline and "3 ktok/s" in headline and "1.2 ktok/s" in headline
    # A variant (another fastbert configuration) gets its own headline line against the baselines.
    variant = next(line for line in report.splitlines() if line.startswith("| pretrain mini | fastbert-graphs | transformers-sdpa"))
    assert "| 5.00x |" in variant and "6 ktok/s" in variant
    # 6e12 FLOP per 1 s step against a measured 1e15 FLOP/s matmul: 0.6% MFU.
    assert "| 0.6% |" in report
    assert "2.50x" in report and "test device" in report and "abcdef123456" in report
    assert (out / "throughput.png").read_bytes().startswith(PNG_MAGIC)


def test_summary_printed_last_has_samples_tokens_mfu_and_peak_memory(tmp_path: Path, capsys):
    data = results()
    data["benchmarks"][1]["extra_info"]["peak_memory_bytes"] = 3.5e9
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "step_ops.md").write_text("| preset | implementation | launches per step |\n| base | fastbert | 321 |\n")
    source = write(tmp_path / "run.json", data)
    assert bench.main(["--from-json", str(source), "--out", str(tmp_path / "out"), "--history", str(tmp_path / "h.jsonl")]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("benchmark"))
    assert header.split()[2:] == ["median", "seq/s", "tok/s", "MFU", "peak", "mem", "speedup"]
    row = next(line for line in printed.splitlines() if line.startswith("pretrain mini") and " fastbert " in line)
    # 32 sequences and 3000 real tokens a 1 s step, 6e12 FLOP of a measured 1e15 FLOP/s, 3.5 GB at peak.
    assert row.split()[3:] == ["1", "s", "32", "3", "k", "0.6%", "3.5", "GB"], row
    assert printed.index("ceiling matmul") < printed.index("| base | fastbert | 321 |")  # the op counts come after


def test_compare_names_only_regressions_beyond_threshold():
    previous = results(step_fastbert=1.0, step_hf=2.5, attention=0.02)
    current = results(step_fastbert=1.3, step_hf=2.6, attention=0.01)
    changes = {c.fullname.split("[")[1]: c for c in bench.compare(previous, current, threshold=0.1)}
    assert changes["pretrain mini-fastbert]"].regressed  # +30%
    assert not changes["pretrain mini-transformers-sdpa]"].regressed  # +4%
    assert not changes["attention s128-fastbert-auto]"].regressed  # twice as fast
    assert [c.fullname for c in bench.compare(previous, current, 0.5) if c.regressed] == []


@pytest.mark.parametrize("slowdown, expected_exit", [(1.3, 1), (1.05, 0)])
def test_fail_on_regression_sets_the_exit_code(tmp_path: Path, slowdown: float, expected_exit: int):
    previous = write(tmp_path / "old.json", results())
    current = write(tmp_path / "new.json", results(step_fastbert=slowdown))
    argv = ["--from-json", str(current), "--compare", str(previous), "--fail-on-regression",
            "--out", str(tmp_path / "r"), "--history", str(tmp_path / "h.jsonl")]
    assert bench.main(argv) == expected_exit
    report = (tmp_path / "r" / "report.md").read_text()
    assert ("REGRESSION" in report) == (expected_exit == 1)


def test_history_tracks_headline_throughput_across_runs(tmp_path: Path):
    history = tmp_path / "history.jsonl"
    for commit, step in (("1111111", 1.0), ("2222222", 0.5)):
        run = results(step_fastbert=step)
        run["commit_info"]["id"] = commit
        bench.append_history(history, run, "fastbert bench")
    entries = bench.read_history(history)
    assert [e["real_tokens_per_s"]["pretrain mini | fastbert"] for e in entries] == [3000.0, 6000.0]
    assert "attention s128 | fastbert-auto" not in entries[0]["real_tokens_per_s"]  # not a headline group
    plots = bench.write_plots(results(), tmp_path, history)
    assert {p.name for p in plots} == {"throughput.png", "history.png"}
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in plots)


def test_bad_inputs_are_one_line_user_errors(tmp_path: Path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert bench.main(["--from-json", str(broken), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastbert: error:") and str(broken) in err and "\n" not in err

    assert bench.main(["--from-json", str(broken), "--fail-on-regression", "--out", str(tmp_path / "r")]) == 2
    assert "--compare" in capsys.readouterr().err

    history = write(tmp_path / "h.jsonl", {})
    history.write_text('{"ok": 1}\nnot json\n')
    with pytest.raises(bench.InputError, match=r"h\.jsonl:2:"):
        bench.read_history(history)


def test_report_includes_the_kernel_table_left_by_the_gpu_suite(tmp_path: Path):
    rows = [{"op": "layer_norm", "tokens": 8192, "hidden": 768, "direction": direction, "impl": impl,
             "ms": ms, "gbps": 50.0 / ms, "copy_fraction": 0.02 / ms}
            for direction in ("forward", "both") for impl, ms in (("triton", 0.1), ("eager", 0.3), ("compiled", 0.15))]
    (tmp_path / "bench_kernels.json").write_text(json.dumps({"dtype": "torch.bfloat16", "copy_gbps": 2500.0, "rows": rows}))
    source = write(tmp_path / "run.json", results())
    assert bench.main(["--from-json", str(source), "--out", str(tmp_path), "--history", str(tmp_path / "h.jsonl")]) == 0
    report = (tmp_path / "report.md").read_text()
    # Only the forward + backward row, with triton's bandwidth and its speedups over eager and compiled.
    assert "| layer_norm | 8192 | 768 | 500 (20%) | 3.00x | 1.50x |" in report
    assert report.count("| layer_norm |") == 1
