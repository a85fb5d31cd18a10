"""`fastbert data download` against a local HTTP server serving archives built here."""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import json
import threading
import zipfile

import pytest

from fastbert.errors import InputError, UserError
from fastbert.finetune import download as dl
from fastbert.finetune.tasks import get_task

COLA_ROWS = "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more books.\n"


@pytest.fixture
def served(tmp_path):
    """(folder, base URL) of an HTTP server on 127.0.0.1 serving the folder's files."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _zip(path, members: dict[str, str]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)


def test_cola_archive_unpacks_into_the_task_folder(served, tmp_path):
    root, url = served
    _zip(
        root / "cola_public_1.1.zip",
        {
            "cola_public/README": "readme",
            "cola_public/raw/in_domain_train.tsv": COLA_ROWS,
            "cola_public/raw/in_domain_dev.tsv": COLA_ROWS,
            "cola_public/raw/out_of_domain_dev.tsv": COLA_ROWS.rstrip("\n"),
            "cola_public/tokenized/in_domain_train.tsv": "not wanted",
        },
    )
    folder = dl.download("cola", cache=tmp_path / "cache", base_url=url)
    assert folder == tmp_path / "cache" / "cola"
    assert sorted(p.name for p in folder.iterdir()) == [
        "MANIFEST.json", "in_domain_dev.tsv", "in_domain_train.tsv", "out_of_domain_dev.tsv",
    ]
    task = get_task("cola")
    assert {split: len(task.read(p)) for split, p in task.files(folder).items()} == {
        "train": 2, "in_domain": 2, "out_of_domain": 2,
    }
    (entry,) = json.loads((folder / "MANIFEST.json").read_text())["files"]
    archive = (root / "cola_public_1.1.zip").read_bytes()
    assert entry["sha256"] == hashlib.sha256(archive).hexdigest() and entry["bytes"] == len(archive)
    assert entry["verified"] is False
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cola"], "temporary folders must be gone"


def test_mrpc_is_split_by_dev_ids(served, tmp_path, monkeypatch):
    root, url = served
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    rows = ["1\t10\t11\tA cat sat .\tA cat was sitting .", "0\t20\t21\tIt rains .\t\" Sun \" shines .", "1\t30\t31\tYes .\tIndeed ."]
    (root / "msr_paraphrase_train.txt").write_text("\r\n".join([header, *rows]) + "\r\n", encoding="utf-8")
    (root / "msr_paraphrase_test.txt").write_text("\r\n".join([header, "1\t40\t41\tHi .\tHello ."]) + "\r\n", encoding="utf-8")
    (root / "mrpc_dev_ids.tsv").write_text("20\t21\n")
    monkeypatch.setenv(dl.BASE_URL_ENV, url)
    folder = dl.download("glue", "mrpc", cache=tmp_path)
    task = get_task("mrpc")
    train, dev = (task.read(p) for p in task.files(folder).values())
    assert [e.label for e in train] == [1, 1] and [e.label for e in dev] == [0]
    assert dev[0].text_b == '" Sun " shines .'
    (test,) = task.read(task.test_paths(folder)["MRPC"], labelled=False)
    assert (test.index, test.text_a, test.text_b, test.label) == ("0", "Hi .", "Hello .", None)


def test_glue_archive_names_differ_from_folders(served, tmp_path):
    root, url = served
    rows = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\tWhy?\tHow come?\t1\n"
    _zip(root / "QQP-clean.zip", {"QQP/train.tsv": rows, "QQP/dev.tsv": rows, "QQP/test.tsv": "id\tquestion1\tquestion2\n0\tA?\tB?\n"})
    folder = dl.download("glue", "qqp", cache=tmp_path, base_url=url)
    assert folder == tmp_path / "glue" / "QQP"
    assert [e.label for e in get_task("qqp").read(folder / "train.tsv")] == [1]


def test_checksum_mismatch_is_a_clear_error_leaving_nothing(served, tmp_path):
    root, url = served
    (root / "train-v1.1.json").write_text('{"data": []}')
    (root / "dev-v1.1.json").write_text('{"data": []}')
    with pytest.raises(UserError, match=r"train-v1\.1\.json: sha256 [0-9a-f]{64} does not match the published 3527"):
        dl.download("squad", cache=tmp_path / "cache", base_url=url)
    assert list((tmp_path / "cache").iterdir()) == []


def test_known_checksum_verifies(served, tmp_path, monkeypatch):
    root, url = served
    for name in ("train-v2.0.json", "dev-v2.0.json"):
        (root / name).write_text('{"data": []}')
        monkeypatch.setitem(dl.SHA256, name, hashlib.sha256(b'{"data": []}').hexdigest())
    folder = dl.download("squad_v2", cache=tmp_path, base_url=url)
    assert all(entry["verified"] for entry in json.loads((folder / "MANIFEST.json").read_text())["files"])
    assert get_task("squad_v2").read(folder / "dev-v2.0.json") == []


def test_unsafe_archive_member_is_refused(served, tmp_path):
    root, url = served
    _zip(root / "RTE.zip", {"RTE/train.tsv": "x", "RTE/../../evil.tsv": "boom"})
    with pytest.raises(InputError, match="unsafe member name"):
        dl.download("glue", "rte", cache=tmp_path / "cache", base_url=url)
    assert not (tmp_path / "evil.tsv").exists() and list((tmp_path / "cache" / "glue").iterdir()) == []


def test_missing_file_and_bad_names(served, tmp_path):
    _, url = served
    with pytest.raises(UserError, match=r"/train\.csv: download failed \(HTTP 404 "):
        dl.download("swag", cache=tmp_path, base_url=url)
    with pytest.raises(UserError, match="give a task after `glue`"):
        dl.download("glue", cache=tmp_path, base_url=url)
    with pytest.raises(UserError, match="unknown GLUE task 'cola2'"):
        dl.download("glue", "cola2", cache=tmp_path, base_url=url)


def test_command_line(served, tmp_path, capsys, monkeypatch):
    root, url = served
    _zip(root / "STS-B.zip", {"STS-B/train.tsv": "h\n", "STS-B/dev.tsv": "h\n"})
    parser = argparse.ArgumentParser()
    dl.register(parser.add_subparsers())
    args = parser.parse_args(["download", "glue", "stsb", "--cache", str(tmp_path)])
    monkeypatch.setenv(dl.BASE_URL_ENV, url)
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "glue" / "STS-B")
