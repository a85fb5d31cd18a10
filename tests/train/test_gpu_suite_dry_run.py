"""A CPU dry run of the GPU suite's training-step benchmarks, so that the first GPU run of
benchmarks/gpu_session.sh does not die on a typo: every GPU case (shrunk to the tiny preset)
and every implementation builds its step exactly as benchmarks/test_pretraining.py does and
trains on its batches, the packed case on real shards prepared here from the shared corpus,
CUDA graphs emulated (see test_cuda_graphs.py) and torch.compile on its eager backend (the
tracing, without minutes of inductor code generation on two cores)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_cuda_graphs import emulated_cuda_graphs  # noqa: F401 (a fixture)

from benchmarks import test_finetune_step as finetune_suite
from benchmarks import test_pretraining as suite
from benchmarks import workloads
from fastbert.model import BertConfig

ROW_LEN = 64


@pytest.fixture(scope="module")
def packed_shards(tmp_path_factory, shared_data: Path, minilm_dir: Path) -> Path:
    """Pairs of at most ROW_LEN tokens from one file of the shared Wikipedia corpus."""
    from fastbert.data.prepare import prepare_pretraining_data
    from fastbert.data.settings import PrepareSettings

    out = tmp_path_factory.mktemp("packed") / "wiki"
    prepare_pretraining_data([str(shared_data / "corpus" / "wiki_00.txt")], minilm_dir, out,
                             PrepareSettings(max_seq_len=ROW_LEN), 1)
    return out


def shrunk(case: suite.PretrainCase) -> suite.PretrainCase:
    return replace(case, preset="tiny", batch_size=min(case.batch_size, 4), seq_len=ROW_LEN)


@pytest.mark.parametrize("case", suite.CASES["gpu"], ids=str)
def test_every_gpu_case_and_implementation_trains_on_the_cpu(case, emulated_cuda_graphs, packed_shards, monkeypatch, tmp_path):
    monkeypatch.setattr(workloads, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(workloads, "PACKED_DATA", packed_shards)
    case = shrunk(case)
    config = BertConfig.preset(case.preset)
    directory = str(tmp_path / "weights")
    workloads.save_initial_weights("pretraining", config, directory)
    batches = suite.case_batches(case, config)
    assert len(batches) == suite.DISTINCT_BATCHES
    if case.packed:  # real pairs, packed into the case's rows (pairs this short rarely share one)
        assert all(b.real_tokens <= case.batch_size * ROW_LEN and b.sequences >= case.batch_size for b in batches)
    timed = [impl for impl in suite.IMPLEMENTATIONS_TIMED if suite.case_skip_reason(case, impl) is None]
    assert {suite.GRAPHED, "fastbert", "transformers-sdpa"} <= set(timed)
    assert (suite.TRANSFORMERS_COMPILED in timed) == case.compiled_baseline
    for impl in timed:
        step, its_batches = suite.build_step(case, impl, directory, batches, torch.device("cpu"))
        for batch in its_batches[:2]:
            step(batch)
        assert all(b.real_tokens > 0 and workloads.pretraining_flops(config, b) > 0 for b in its_batches), impl


@pytest.mark.parametrize("case", finetune_suite.CASES["gpu"], ids=str)
def test_every_gpu_fine_tuning_implementation_trains_on_the_cpu(case, emulated_cuda_graphs, tmp_path):
    case = replace(case, preset="tiny", batch_size=4)
    workloads.save_initial_weights("classification", BertConfig.preset(case.preset), str(tmp_path))
    for impl in (*workloads.IMPLEMENTATIONS, workloads.GRAPHED):
        step, batches = finetune_suite.build_step(case, impl, str(tmp_path), torch.device("cpu"))
        for batch in batches[:2]:
            step(batch)
