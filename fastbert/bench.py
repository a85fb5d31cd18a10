"""``fastbert bench``: run the benchmark suites, then report, plot, track history and flag regressions.

Each ``benchmarks/test_*.py`` suite runs in its own pytest process (pytest-benchmark),
so a crash or a timeout in one section cannot take the others down; their JSON files
are merged into one pytest-benchmark document. Every entry's ``extra_info`` says which
implementation ran (``impl``), whether it is the ``candidate`` or a ``baseline`` of its
group (``role``) and the work one call does (``real_tokens``, ``sequences``, ``flops``,
``bytes``); entries with ``ceiling`` set are measured device limits (``matmul``: FLOP/s,
``copy``: bytes/s) that MFU and bandwidth fractions are taken against.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_file, write_json
from .errors import InputError, UserError

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
HISTORY = BENCHMARKS / "results" / "history.jsonl"
SUITES = {"cpu": ("cpu",), "gpu": ("gpu",), "all": ("cpu", "gpu")}
FILE_TIMEOUT_S = {"cpu": 900, "gpu": 260}
STEP_OPS_TIMEOUT_S = 600
# Ceilings first (every rate is divided by them), then the headline training steps, so a
# spent time budget cuts the least important sections.
FIRST = ("test_ceilings", "test_pretraining", "test_attention")


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="run the benchmark suites and write a report",
        description="Run the benchmark suites against their baselines; write a report, plots and the history; "
                    "flag regressions against a previous run.",
    )
    p.add_argument("--suite", choices=list(SUITES), default="cpu", help="cases and device to run (default cpu)")
    p.add_argument("--out", type=Path, help="report folder (default benchmarks/results/<date>-<suite>)")
    p.add_argument("--compare", type=Path, metavar="PREVIOUS_JSON", help="a previous run's pytest-benchmark JSON")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when --compare finds a regression")
    p.add_argument("--threshold", type=float, default=0.1, help="relative slowdown of a median that counts (0.1)")
    p.add_argument("--history", type=Path, default=HISTORY, help="JSONL file the headline metrics are appended to")
    p.add_argument("--from-json", type=Path, metavar="JSON", help="report on an existing result instead of running")
    p.add_argument("-k", dest="select", help="pytest -k expression choosing benchmarks")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="skip the sections that would start after this")
    p.set_defaults(func=run_command)


def main(argv: list[str] | None = None) -> int:
    """``python -m fastbert.bench ...``: the bench command alone, without importing the other commands
    (the GPU suite runs where deepspeed may be absent)."""
    parser = argparse.ArgumentParser(prog="fastbert")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_command(args)
    except UserError as err:
        print(f"fastbert: error: {err}", file=sys.stderr)
        return err.exit_code


def run_command(args: argparse.Namespace) -> int:
    if args.threshold <= 0:
        raise UserError(f"--threshold must be positive; got {args.threshold}")
    if args.fail_on_regression and args.compare is None:
        raise UserError("--fail-on-regression needs --compare PREVIOUS_JSON")
    previous = load_results(args.compare) if args.compare else None
    out = args.out or BENCHMARKS / "results" / f"{dt.date.today().isoformat()}-{args.suite}"
    out.mkdir(parents=True, exist_ok=True)
    argv = sys.argv[1:]
    command = " ".join(["fastbert bench", *map(shlex.quote, argv[argv.index("bench") + 1 :] if "bench" in argv else argv)])

    if args.from_json:
        results = load_results(args.from_json)
    else:
        results, failures = run_suites(SUITES[args.suite], out, args.select, args.time_budget)
        if "cpu" in SUITES[args.suite] and args.select is None:
            failures += count_step_ops(out)
        results["fastbert_failures"] = failures  # kept so that a re-rendered report still shows them
        write_json(out / f"bench-{args.suite}.json", results, indent=1)
    failures = results.get("fastbert_failures", [])

    changes = compare(previous, results, args.threshold) if previous else None
    if not args.from_json:  # the history records runs, not re-reports of old ones
        append_history(args.history, results, command)
    plots = write_plots(results, out, args.history)
    kernels = kernel_lines(out)
    op_counts = step_ops_lines(out)
    report = render_report(results, command, failures, changes, args.threshold, plots, kernels, op_counts)
    (out / "report.md").write_text(report)
    print(summary_table(results, failures, changes))
    for lines in (kernels, op_counts):
        if lines:
            print("\n" + "\n".join(lines))
    print(f"\nreport: {out / 'report.md'}")
    regressions = [c for c in changes or [] if c.regressed]
    return 1 if args.fail_on_regression and regressions else 0


# ---------------------------------------------------------------------------------------------
# Running the suites
# ---------------------------------------------------------------------------------------------
def run_suites(suites: tuple[str, ...], out: Path, select: str | None,
               budget_s: float | None = None) -> tuple[dict, list[str]]:
    """Run every suite file once per suite; the merged pytest-benchmark document and the failures."""
    files = sorted(BENCHMARKS.glob("test_*.py"), key=lambda p: (FIRST.index(p.stem) if p.stem in FIRST else len(FIRST), p.name))
    if not files:
        raise UserError(f"{BENCHMARKS}: no test_*.py suites (fastbert bench needs a source checkout)")
    deadline = time.monotonic() + (budget_s if budget_s is not None else float("inf"))
    documents, failures = [], []
    for suite in suites:
        for path in files:
            remaining = deadline - time.monotonic()
            if remaining < 15:
                failures.append(f"{suite}: {path.name} skipped (time budget spent)")
                continue
            json_path = out / f".{suite}-{path.stem}.json"
            timeout = min(FILE_TIMEOUT_S[suite], remaining)
            rc = _run_pytest(path, suite, json_path, out / f"{suite}-{path.stem}.log", select, timeout)
            if json_path.is_file():
                text = json_path.read_text()
                if text.strip():  # empty when every benchmark of the file was skipped
                    documents.append(json.loads(text))
                json_path.unlink()
            if rc not in (0, 5):  # 5: nothing collected (e.g. -k matched nothing in this file)
                failures.append(f"{suite}: {path.name} " + ("timed out" if rc is None else f"exited {rc}") +
                                f" (log: {suite}-{path.stem}.log)")
    return merge(documents), failures


def _run_pytest(path: Path, suite: str, json_path: Path, log_path: Path, select: str | None,
                timeout: float) -> int | None:
    cmd = [
        sys.executable, "-m", "pytest", str(path), "-p", "no:cacheprovider",
        "-m", "", "--benchmark-enable", "--benchmark-json", str(json_path), "--bench-suite", suite,
        "-q", "--continue-on-collection-errors", "-rfEs",
    ]
    if select:
        cmd += ["-k", select]
    print(f"== {suite}: {path.name}", flush=True)
    start = time.monotonic()
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            rc = None
    tail = log_path.read_text().strip().splitlines()[-1:] or ["(no output)"]
    print(f"   {tail[0]}  [{time.monotonic() - start:.0f} s]", flush=True)
    return rc


def merge(documents: list[dict]) -> dict:
    """One pytest-benchmark document holding every benchmark, with the first run's machine and commit."""
    if not documents:
        return {"machine_info": {}, "commit_info": {}, "benchmarks": [], "datetime": _now(), "version": None}
    merged = dict(documents[0])
    merged["benchmarks"] = [b for d in documents for b in d.get("benchmarks", [])]
    return merged


def load_results(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise InputError(path, "not a pytest-benchmark JSON (no 'benchmarks' list)")
    for i, bench in enumerate(data["benchmarks"]):
        if not isinstance(bench, dict) or "fullname" not in bench or "median" not in bench.get("stats", {}):
            raise InputError(path, f"benchmarks[{i}] lacks 'fullname' or 'stats.median'")
    return data


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One benchmark with the rates derived from its median."""

    fullname: str
    group: str
    impl: str
    role: str
    median: float
    iqr: float
    rounds: int
    info: dict[str, Any]

    def rate(self, key: str) -> float | None:
        """``info[key]`` per second (e.g. real tokens/s), or None when the benchmark does not count it."""
        value = self.info.get(key)
        return value / self.median if value and self.median > 0 else None


def rows(results: dict) -> list[Row]:
    out = []
    for bench in results["benchmarks"]:
        info = bench.get("extra_info") or {}
        stats = bench["stats"]
        out.append(Row(
            fullname=bench["fullname"], group=bench.get("group") or bench["fullname"].split("::")[0],
            impl=info.get("impl", bench.get("param") or bench.get("name", "?")), role=info.get("role", ""),
            median=stats["median"], iqr=stats.get("iqr", 0.0), rounds=stats.get("rounds", 0), info=info,
        ))
    return out


def grouped(all_rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in all_rows:
        groups.setdefault(row.group, []).append(row)
    return groups


def ceilings(all_rows: list[Row]) -> dict[str, float]:
    """Measured device limits: ``matmul`` in FLOP/s, ``copy`` in bytes/s (the best of each kind)."""
    found: dict[str, float] = {}
    for row in all_rows:
        kind = row.info.get("ceiling")
        rate = row.rate("flops" if kind == "matmul" else "bytes")
        if kind and rate:
            found[kind] = max(found.get(kind, 0.0), rate)
    return found


def speedups(group: list[Row], fastbert: Row | None = None) -> dict[str, float]:
    """Per baseline impl: baseline median / ``fastbert``'s median (>1 means fastbert is faster).

    ``fastbert`` defaults to the group's candidate; a ``variant`` row (another fastbert
    configuration, e.g. CUDA graphs) can be compared the same way.
    """
    fastbert = fastbert or next((r for r in group if r.role == "candidate"), None)
    if fastbert is None:
        return {}
    return {r.impl: r.median / fastbert.median for r in group if r.role == "baseline" and fastbert.median > 0}


@dataclass
class Change:
    fullname: str
    previous: float
    current: float
    threshold: float

    @property
    def relative(self) -> float:
        return self.current / self.previous - 1.0

    @property
    def regressed(self) -> bool:
        return self.relative > self.threshold


def compare(previous: dict, current: dict, threshold: float) -> list[Change]:
    """Median changes of the benchmarks both runs share, slowest first."""
    before = {b["fullname"]: b["stats"]["median"] for b in previous["benchmarks"]}
    changes = [
        Change(b["fullname"], before[b["fullname"]], b["stats"]["median"], threshold)
        for b in current["benchmarks"] if b["fullname"] in before and before[b["fullname"]] > 0
    ]
    return sorted(changes, key=lambda c: -c.relative)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------
def _seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value * 1e9:.3g} ns"


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def environment(results: dict) -> dict[str, str]:
    machine = results.get("machine_info", {})
    commit = results.get("commit_info", {})
    env = {
        "date": results.get("datetime", ""),
        "device": machine.get("fastbert_device") or machine.get("cpu", {}).get("brand_raw", platform.processor()),
        "cpu": f"{machine.get('cpu', {}).get('brand_raw', '?')} ({machine.get('cpu', {}).get('count', '?')} cores)",
        "torch threads": str(machine.get("torch_threads", "?")),
        "python": machine.get("python_version", platform.python_version()),
        "git commit": (commit.get("id") or "?")[:12] + (" (uncommitted changes)" if commit.get("dirty") else ""),
    }
    env.update({name: str(version) for name, version in machine.get("versions", {}).items()})
    return env


def headline_lines(all_rows: list[Row]) -> list[str]:
    lines = []
    for name, group in grouped(all_rows).items():
        candidate = next((r for r in group if r.role == "candidate"), None)
        if candidate is None or not candidate.info.get("headline"):
            continue
        for fastbert in [candidate, *(r for r in group if r.role == "variant")]:
            for impl, ratio in speedups(group, fastbert).items():
                base = next(r for r in group if r.impl == impl)
                lines.append(
                    f"| {name} | {fastbert.impl} | {impl} | {ratio:.2f}x | {_si(fastbert.rate('real_tokens'), 'tok/s')} | "
                    f"{_si(base.rate('real_tokens'), 'tok/s')} | {_si(fastbert.rate('sequences'), 'seq/s')} | "
                    f"{_si(base.rate('sequences'), 'seq/s')} |"
                )
    return lines


def count_step_ops(out: Path) -> list[str]:
    """Run benchmarks/step_ops.py (ops and launches per training step; deterministic, so outside
    the timed suites) into ``out``; the failures to report."""
    print("== cpu: step_ops.py", flush=True)
    log = out / "step_ops.log"
    try:
        with log.open("w") as sink:
            done = subprocess.run([sys.executable, str(BENCHMARKS / "step_ops.py"), "--out", str(out)],
                                  stdout=sink, stderr=subprocess.STDOUT, timeout=STEP_OPS_TIMEOUT_S, cwd=REPO)
    except subprocess.TimeoutExpired:
        return [f"cpu: step_ops.py timed out (log: {log.name})"]
    return [] if done.returncode == 0 else [f"cpu: step_ops.py exited {done.returncode} (log: {log.name})"]


def step_ops_lines(out: Path) -> list[str]:
    """The op-count table step_ops.py left in ``out`` (step_ops.md), if any."""
    path = out / "step_ops.md"
    return path.read_text().splitlines() if path.is_file() else []


def kernel_lines(out: Path) -> list[str]:
    """A table of bench_kernels.py's forward+backward rows, when the GPU suite left its JSON in ``out``."""
    path = out / "bench_kernels.json"
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        cells: dict[tuple, dict[str, dict]] = {}
        for row in data["rows"]:
            if row["direction"] == "both":
                cells.setdefault((row["op"], row["tokens"], row["hidden"]), {})[row["impl"]] = row
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return [f"(unreadable {path.name}: {err})"]
    lines = [f"Fused kernels, forward + backward, {data.get('dtype', '')}; device copy {data.get('copy_gbps', 0):.0f} GB/s",
             "", "| op | tokens | hidden | triton GB/s (of copy) | vs eager | vs compiled |",
             "| --- | --- | --- | --- | --- | --- |"]
    for (op, tokens, hidden), impls in cells.items():
        triton = impls.get("triton")
        if triton is None:
            continue
        ratio = {k: f"{impls[k]['ms'] / triton['ms']:.2f}x" if k in impls else "–" for k in ("eager", "compiled")}
        lines.append(f"| {op} | {tokens} | {hidden} | {triton['gbps']:.0f} ({triton['copy_fraction']:.0%}) | "
                     f"{ratio['eager']} | {ratio['compiled']} |")
    return lines


def _mfu(row: Row, limits: dict[str, float]) -> str:
    """The row's FLOP rate as a fraction of the measured matmul rate ("–" without one; a ceiling
    is not quoted as a fraction of itself)."""
    flops = row.rate("flops")
    return f"{flops / limits['matmul']:.1%}" if flops and "matmul" in limits and not row.info.get("ceiling") else "–"


def render_report(results: dict, command: str, failures: list[str], changes: list[Change] | None,
                  threshold: float, plots: list[Path], kernels: list[str], op_counts: list[str] = ()) -> str:
    all_rows = rows(results)
    limits = ceilings(all_rows)
    md = ["# fastbert benchmark report", ""]
    md += ["| | |", "| --- | --- |"]
    md += [f"| {k} | {v} |" for k, v in environment(results).items()]
    md += [f"| command | `{command}` |", ""]
    if failures:
        md += ["## Failed sections", ""] + [f"- {f}" for f in failures] + [""]
    headline = headline_lines(all_rows)
    if headline:
        md += ["## Headline", "",
               "| benchmark | fastbert | baseline | fastbert speedup | fastbert real tokens/s | baseline real tokens/s "
               "| fastbert seq/s | baseline seq/s |",
               "| --- | --- | --- | --- | --- | --- | --- | --- |", *headline, ""]
    if limits:
        md += ["## Measured ceilings", ""]
        md += [f"- {kind}: {_si(rate, 'FLOP/s' if kind == 'matmul' else 'B/s')}" for kind, rate in limits.items()]
        md += [""]
    md += ["## All benchmarks", "",
           "Median and interquartile range (IQR) of the timed rounds; rates divide the work of one call by the "
           "median. *speedup* is this baseline's median over the candidate's (above 1: fastbert is faster).", ""]
    for name, group in grouped(all_rows).items():
        ratios = speedups(group)
        md += [f"### {name}", "",
               "| impl | role | median | IQR | rounds | real tokens/s | seq/s | bandwidth | FLOP/s | MFU | peak mem | speedup |",
               "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in group:
            flops = r.rate("flops")
            relative = not r.info.get("ceiling")  # a ceiling is not quoted as a fraction of itself
            mfu = _mfu(r, limits)
            gbps = r.rate("bytes")
            bw = _si(gbps, "B/s") + (f" ({gbps / limits['copy']:.0%})" if gbps and "copy" in limits and relative else "")
            mem = r.info.get("peak_memory_bytes")
            md.append(
                f"| {r.impl} | {r.role or '–'} | {_seconds(r.median)} | {_seconds(r.iqr)} | {r.rounds} | "
                f"{_si(r.rate('real_tokens'), '')} | {_si(r.rate('sequences'), '')} | {bw} | "
                f"{_si(flops, 'FLOP/s')} | {mfu} | {_si(mem, 'B') if mem else '–'} | "
                f"{f'{ratios[r.impl]:.2f}x' if r.impl in ratios else '–'} |"
            )
        md.append("")
    if kernels:
        md += ["## Kernels (benchmarks/bench_kernels.py)", "", *kernels, ""]
    if op_counts:
        md += ["## Host work per training step (benchmarks/step_ops.py)", "", *op_counts, ""]
    if changes is not None:
        md += [f"## Comparison with the previous run (threshold {threshold:.0%})", ""]
        md += _change_lines(changes) or ["No benchmarks in common."]
        md += [""]
    if plots:
        md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(md)


def _change_lines(changes: list[Change]) -> list[str]:
    if not changes:
        return []
    lines = ["| benchmark | previous | current | change | verdict |", "| --- | --- | --- | --- | --- |"]
    for c in changes:
        verdict = "REGRESSION" if c.regressed else ("faster" if c.relative < -c.threshold else "same")
        lines.append(f"| {c.fullname} | {_seconds(c.previous)} | {_seconds(c.current)} | {c.relative:+.1%} | {verdict} |")
    return lines


def summary_table(results: dict, failures: list[str], changes: list[Change] | None) -> str:
    """Plain-text summary printed last: one line per benchmark (median, sequences/s, real tokens/s,
    MFU against the measured matmul rate, peak memory, speedup), the ceilings, then failures and
    regressions."""
    all_rows = rows(results)
    if not all_rows:
        return "no benchmark ran (every case skipped or failed; see the logs beside the report)"
    limits = ceilings(all_rows)
    lines = [f"{'benchmark':<36} {'impl':<26} {'median':>9} {'seq/s':>8} {'tok/s':>8} {'MFU':>6} {'peak mem':>9} {'speedup':>8}"]
    for name, group in grouped(all_rows).items():
        ratios = speedups(group)
        for r in group:
            mfu = _mfu(r, limits)
            mem = r.info.get("peak_memory_bytes")
            ratio = f"{ratios[r.impl]:.2f}x" if r.impl in ratios else ""
            lines.append(f"{name[:36]:<36} {r.impl[:26]:<26} {_seconds(r.median):>9} {_si(r.rate('sequences'), ''):>8} "
                         f"{_si(r.rate('real_tokens'), ''):>8} {mfu:>6} {_si(mem, 'B') if mem else '–':>9} {ratio:>8}")
    lines += [f"ceiling {kind}: {_si(rate, 'FLOP/s' if kind == 'matmul' else 'B/s')}" for kind, rate in limits.items()]
    lines += [f"FAILED {f}" for f in failures]
    lines += [f"REGRESSION {c.fullname}: {c.relative:+.1%}" for c in changes or [] if c.regressed]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# History and plots
# ---------------------------------------------------------------------------------------------
def headline_metrics(results: dict) -> dict[str, float]:
    """``"<group> | <impl>"`` → real tokens/s for the headline groups (the numbers tracked across commits)."""
    metrics = {}
    for name, group in grouped(rows(results)).items():
        if any(r.info.get("headline") for r in group):
            for r in group:
                if r.rate("real_tokens"):
                    metrics[f"{name} | {r.impl}"] = r.rate("real_tokens")
    return metrics


def append_history(path: Path, results: dict, command: str) -> None:
    metrics = headline_metrics(results)
    if not metrics:
        return
    commit = results.get("commit_info", {})
    entry = {"datetime": results.get("datetime") or _now(), "commit": commit.get("id"), "dirty": commit.get("dirty"),
             "device": environment(results)["device"], "command": command, "real_tokens_per_s": metrics}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(path, f"not a JSON line ({err})", line=number) from None
    return entries


def write_plots(results: dict, out: Path, history_path: Path) -> list[Path]:
    """throughput.png (every group, each implementation) and history.png (headline metrics per saved run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    groups = grouped([r for r in rows(results) if not r.info.get("ceiling")])
    if groups:
        fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.2 + 1.0 * sum(len(g) for g in groups.values())),
                                 squeeze=False)
        for ax, (name, group) in zip(axes[:, 0], groups.items()):
            by_tokens = all(r.rate("real_tokens") for r in group)
            values = [r.rate("real_tokens") if by_tokens else 1.0 / r.median for r in group]
            colors = ["tab:green" if r.role == "candidate" else "tab:gray" for r in group]
            ax.barh([r.impl for r in group], values, color=colors)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("real tokens/s" if by_tokens else "calls/s", fontsize=8)
            ax.tick_params(labelsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / "throughput.png"))
        plt.close(fig)

    history = read_history(history_path)
    if history:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        names = sorted({k for e in history for k in e["real_tokens_per_s"]})
        for name in names:
            points = [(i, e["real_tokens_per_s"][name]) for i, e in enumerate(history) if name in e["real_tokens_per_s"]]
            ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xticks(range(len(history)))
        ax.set_xticklabels([(e.get("commit") or "?")[:7] + ("+" if e.get("dirty") else "") for e in history],
                           rotation=45, fontsize=7)
        ax.set_ylabel("real tokens/s")
        ax.set_title("headline throughput across saved runs")
        ax.legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, out / "history.png"))
        plt.close(fig)
    return written


def _save(fig, path: Path) -> Path:
    write_file(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    return path


if __name__ == "__main__":
    sys.exit(main())
