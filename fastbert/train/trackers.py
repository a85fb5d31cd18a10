"""Where the loop's records go besides ``OUT/metrics.jsonl``: TensorBoard, Weights & Biases, MLflow.

``report_to`` names them, comma-separated, as transformers' ``report_to`` does (``jsonl``
is always on and may be named too). Every tracker gets the same scalars at the record's
step: a training record's values as ``train/<name>``, an evaluation's as ``eval/<name>``
(nested results, such as fine-tuning's per-split dev metrics, as ``eval/<split>/<metric>``),
and the run's settings once, at the start. Each is an optional extra whose package is
imported when the run starts (:func:`check_report_to`), so a missing one costs seconds.

* ``tensorboard``: event files in ``OUT/tensorboard`` (``torch.utils.tensorboard``); a resumed
  run purges the events after its checkpoint's step, so repeated steps are not drawn twice.
* ``wandb``: a run in ``OUT/wandb``; W&B's variables apply (``WANDB_MODE=offline`` writes local
  files only, for ``wandb sync`` later; ``WANDB_PROJECT``, default "fastbert").
* ``mlflow``: a run on ``MLFLOW_TRACKING_URI`` when set, else in a file store in ``OUT/mlruns``
  (``mlflow ui --backend-store-uri OUT/mlruns``); experiment ``MLFLOW_EXPERIMENT_NAME``, default "fastbert".

W&B and MLflow start a new run per invocation; a resumed run is a second run of the same name.
"""

from __future__ import annotations

import importlib
import json
import numbers
import os
import time
from pathlib import Path
from typing import Any, Protocol

from ..errors import UserError

MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""Each tracker's package (its import name); the fastbert extra of the same name installs it."""


class Tracker(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def close(self, failed: bool = False) -> None:
        """End the run; ``failed``: it stopped on an error (a diverged loss, Ctrl-C), so trackers mark it failed."""
        ...


def parse_report_to(report_to: str) -> tuple[str, ...]:
    """The trackers named in ``report_to`` besides jsonl, in order, each once."""
    names = [name.strip() for name in report_to.split(",") if name.strip()]
    unknown = [name for name in names if name != "jsonl" and name not in MODULES]
    if unknown:
        raise UserError(f"report_to {unknown[0]!r} is unknown; expected a comma-separated list of jsonl, {', '.join(MODULES)}")
    return tuple(name for name in dict.fromkeys(names) if name != "jsonl")


def check_report_to(report_to: str) -> tuple[str, ...]:
    """:func:`parse_report_to`, and each tracker's package importable (a one-line error if not)."""
    names = parse_report_to(report_to)
    for name in names:
        try:
            importlib.import_module(MODULES[name])
        except ImportError:
            raise UserError(f"report_to {name}: the {MODULES[name]} package is not installed "
                            f"(pip install 'fastbert[{name}]')") from None
    return names


class Trackers:
    """The run's trackers, fed whole loop records (training metrics, or ``{"step", "eval"}``)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    @classmethod
    def open(cls, report_to: str, out_dir: Path, settings: dict[str, Any], start_step: int) -> "Trackers":
        opened = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}
        return cls([opened[name](Path(out_dir), settings, start_step) for name in check_report_to(report_to)])

    def log(self, record: dict[str, Any]) -> None:
        if self.trackers:
            scalars = record_scalars(record)
            for tracker in self.trackers:
                tracker.log(scalars, record["step"])

    def close(self, failed: bool = False) -> None:
        for tracker in self.trackers:
            tracker.close(failed)


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A loop record as tracker scalars: ``train/…`` or ``eval/…``; non-numbers (a None grad norm) left out."""
    if "eval" in record:
        return _numbers(flatten(record["eval"], "eval/", "/"))
    return _numbers({f"train/{key}": value for key, value in record.items() if key != "step"})


def flatten(values: dict[str, Any], prefix: str = "", separator: str = ".") -> dict[str, Any]:
    """Nested mappings as one level: ``{"optim": {"lr": 1}}`` → ``{"optim.lr": 1}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}{separator}", separator)
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)}


class TensorBoardTracker:
    def __init__(self, out_dir: Path, settings: dict[str, Any], start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        self.writer.add_text("settings", "```\n" + json.dumps(settings, indent=2, default=str) + "\n```", start_step)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a run that stops on an error keeps its curves; logging steps are rare

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, out_dir: Path, settings: dict[str, Any], start_step: int):
        import wandb

        out_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fastbert"), name=os.environ.get("WANDB_NAME", out_dir.name),
                              dir=str(out_dir), config=settings)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class MlflowTracker:
    PARAMS_PER_CALL = 100  # MLflow's log_batch limits
    PARAM_LENGTH = 6000

    def __init__(self, out_dir: Path, settings: dict[str, Any], start_step: int):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 keeps its file store only on request; it needs no server or database.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (out_dir / "mlruns").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "fastbert")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=out_dir.name).info.run_id
        params = [Param(key, str(value)[: self.PARAM_LENGTH]) for key, value in flatten(settings).items()]
        for start in range(0, len(params), self.PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[start:start + self.PARAMS_PER_CALL])

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in scalars.items()])

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
