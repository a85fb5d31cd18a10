"""``fastbert data download``: fetch the public fine-tuning datasets into a local cache.

Every dataset lands in its own folder (``cola``, ``glue/SST-2``, ``squad`` ...) holding the
files its task reads, so that folder is what ``fastbert finetune --data-dir`` takes. The folder
is built under a temporary name beside it and renamed at the end: a folder that exists is
complete. Downloads are checked against a published SHA-256 where one is known; the others
are logged as unverified, and every file's size and SHA-256 are recorded in MANIFEST.json.
``FASTBERT_DATA_URL`` (or ``base_url``) replaces each URL's host and path with a mirror that
serves the same file names.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..atomic import replace_directory
from ..errors import InputError, UserError

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path("~/.cache/fastbert/data")
BASE_URL_ENV = "FASTBERT_DATA_URL"

COLA_URL = "https://nyu-mll.github.io/CoLA/cola_public_1.1.zip"
GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data"
MRPC_TRAIN_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt"
MRPC_TEST_URL = "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_test.txt"
MRPC_DEV_IDS_URL = "https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv"
SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset"
SWAG_URL = "https://raw.githubusercontent.com/rowanz/swagaf/master/data"

# Published SHA-256 digests by file name; files missing here are downloaded unverified.
SHA256: dict[str, str] = {
    "train-v1.1.json": "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955",
    "dev-v1.1.json": "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9",
    "train-v2.0.json": "68dcfbb971bd3e96d5b46c7177b16c1a4e7d4bdef19fb204502738552dede002",
    "dev-v2.0.json": "80a5225e94905956a6446d296ca1093975c4d3b3260f1d6c8f68bc2ab77182d8",
}

# GLUE task -> (folder, archive on GLUE_URL), as download_glue_data.py fetches them; MRPC is built from its sources.
GLUE_ARCHIVES = {
    "sst2": ("SST-2", "SST-2.zip"), "mrpc": ("MRPC", None), "qqp": ("QQP", "QQP-clean.zip"), "stsb": ("STS-B", "STS-B.zip"),
    "mnli": ("MNLI", "MNLI.zip"), "qnli": ("QNLI", "QNLIv2.zip"), "rte": ("RTE", "RTE.zip"), "wnli": ("WNLI", "WNLI.zip"),
}


@dataclass(frozen=True)
class Dataset:
    """What to fetch and how to turn the fetched files into a task's data folder."""

    folder: str
    """Destination relative to the cache."""
    urls: tuple[str, ...]
    build: Callable[[Path, Path], None]
    """build(downloads, out): write the task files into ``out`` from the files in ``downloads``."""


def _unzip(archive: str, prefix: str) -> Callable[[Path, Path], None]:
    """A builder that extracts the members of ``archive`` under ``prefix`` (without it)."""

    def build(downloads: Path, out: Path) -> None:
        path = downloads / archive
        try:
            with zipfile.ZipFile(path) as zf:
                for member in zf.infolist():
                    name = PurePosixPath(member.filename)
                    if member.is_dir() or not member.filename.startswith(prefix):
                        continue
                    relative = PurePosixPath(member.filename[len(prefix) :])
                    if name.is_absolute() or ".." in relative.parts:
                        raise InputError(path, f"unsafe member name {member.filename!r}")
                    target = out.joinpath(*relative.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile as err:
            raise InputError(path, f"not a valid zip archive ({err})") from None
        if not out.is_dir():
            raise InputError(path, f"no files under {prefix!r} in the archive")

    return build


def _copy(downloads: Path, out: Path) -> None:
    shutil.copytree(downloads, out)


def _build_mrpc(downloads: Path, out: Path) -> None:
    """GLUE's MRPC files: train and dev (split by the listed id pairs) keep the header and ``label id1 id2 s1 s2``
    rows; test.tsv has GLUE's ``index id1 id2 s1 s2`` rows (its labels are not part of the benchmark)."""
    dev_ids = set()
    ids_path = downloads / "mrpc_dev_ids.tsv"
    for line in ids_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            dev_ids.add(tuple(line.strip().split("\t")))
    source = downloads / "msr_paraphrase_train.txt"
    out.mkdir()
    with open(source, encoding="utf-8") as src, open(out / "train.tsv", "w", encoding="utf-8") as train, open(
        out / "dev.tsv", "w", encoding="utf-8"
    ) as dev:
        header = src.readline()
        train.write(header)
        dev.write(header)
        for number, line in enumerate(src, 2):
            fields = line.strip().split("\t")
            if len(fields) != 5:
                raise InputError(source, f"expected 5 tab-separated columns, found {len(fields)}", number)
            (dev if tuple(fields[1:3]) in dev_ids else train).write("\t".join(fields) + "\n")
    test_source = downloads / "msr_paraphrase_test.txt"
    with open(test_source, encoding="utf-8-sig") as src, open(out / "test.tsv", "w", encoding="utf-8") as test:
        src.readline()
        test.write("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        for index, (number, line) in enumerate(enumerate(src, 2)):
            fields = line.strip().split("\t")
            if len(fields) != 5:
                raise InputError(test_source, f"expected 5 tab-separated columns, found {len(fields)}", number)
            test.write("\t".join([str(index), *fields[1:]]) + "\n")


def dataset_for(name: str, task: str | None = None) -> Dataset:
    """The download recipe for ``name`` (and, for GLUE, ``task``)."""
    if (name == "glue") != (task is not None):
        raise UserError("give a task after `glue` (and only after it): " + ", ".join(GLUE_ARCHIVES))
    if name == "cola":
        return Dataset("cola", (COLA_URL,), _unzip("cola_public_1.1.zip", "cola_public/raw/"))
    if name == "glue":
        if task not in GLUE_ARCHIVES:
            raise UserError(f"unknown GLUE task {task!r}; expected one of {', '.join(GLUE_ARCHIVES)}")
        folder, archive = GLUE_ARCHIVES[task]
        if archive is None:
            return Dataset("glue/MRPC", (MRPC_TRAIN_URL, MRPC_TEST_URL, MRPC_DEV_IDS_URL), _build_mrpc)
        return Dataset(f"glue/{folder}", (f"{GLUE_URL}/{archive}",), _unzip(archive, f"{folder}/"))
    if name in ("squad", "squad_v2"):
        version = "1.1" if name == "squad" else "2.0"
        return Dataset(name, (f"{SQUAD_URL}/train-v{version}.json", f"{SQUAD_URL}/dev-v{version}.json"), _copy)
    if name == "swag":
        return Dataset("swag", (f"{SWAG_URL}/train.csv", f"{SWAG_URL}/val.csv"), _copy)
    raise UserError(f"unknown dataset {name!r}; expected cola, glue TASK, squad, squad_v2 or swag")


def download(
    name: str,
    task: str | None = None,
    cache: str | os.PathLike | None = None,
    base_url: str | None = None,
    force: bool = False,
) -> Path:
    """Fetch a dataset into ``cache`` (default ~/.cache/fastbert/data) and return its folder."""
    dataset = dataset_for(name, task)
    final = Path(cache or DEFAULT_CACHE).expanduser() / dataset.folder
    if final.is_dir() and not force:
        log.info("%s is already present", final)
        return final
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        downloads = work / "downloads"
        downloads.mkdir()
        manifest = [_fetch(url, downloads, base_url) for url in dataset.urls]
        out = work / final.name
        dataset.build(downloads, out)
        (out / "MANIFEST.json").write_text(json.dumps({"files": manifest}, indent=2) + "\n")
        replace_directory(out, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("%s ready in %s", name if task is None else f"{name} {task}", final)
    return final


def _fetch(url: str, downloads: Path, base_url: str | None) -> dict:
    filename = url.rsplit("/", 1)[-1]
    if base_url:
        url = f"{base_url.rstrip('/')}/{filename}"
    target = downloads / filename
    digest, size = hashlib.sha256(), 0
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as err:
        raise UserError(f"{url}: download failed (HTTP {err.code} {err.reason})") from None
    except (urllib.error.URLError, OSError) as err:
        raise UserError(f"{url}: download failed ({getattr(err, 'reason', err)})") from None
    expected = SHA256.get(filename)
    actual = digest.hexdigest()
    if expected is not None and actual != expected:
        raise UserError(f"{url}: sha256 {actual} does not match the published {expected}; download discarded")
    if expected is None:
        log.warning("%s: unverified (no published checksum); %d bytes, sha256 %s", filename, size, actual)
    return {"url": url, "bytes": size, "sha256": actual, "verified": expected is not None}


def register(data_subparsers: argparse._SubParsersAction) -> None:
    """Add ``download`` to the ``fastbert data`` subcommands."""
    parser = data_subparsers.add_parser(
        "download",
        help="fetch CoLA, a GLUE task, SQuAD or SWAG into a local cache",
        description="Fetch a public fine-tuning dataset: cola | glue {sst2,mrpc,rte,stsb} | squad | squad_v2 | swag.",
    )
    parser.add_argument("dataset", choices=["cola", "glue", "squad", "squad_v2", "swag"])
    parser.add_argument("task", nargs="?", help="the GLUE task: " + ", ".join(GLUE_ARCHIVES))
    parser.add_argument("--cache", default=None, help=f"cache folder (default {DEFAULT_CACHE})")
    parser.add_argument("--force", action="store_true", help="download again even when present")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print(download(args.dataset, args.task, args.cache, force=args.force))
    return 0
