"""`fastbert data prepare` on a full disk: one line naming the directory and the space needed, nothing left behind."""

import errno
import os
from pathlib import Path

import numpy as np

from fastbert.cli import main


def test_a_full_disk_is_one_line_and_leaves_no_staging(corpus_file: Path, tokenizer_dir: Path, tmp_path, capsys, monkeypatch):
    real_save = np.save
    saved = []

    def save(path, array, *args, **kwargs):
        if saved:  # the first array fits, the disk fills during the second
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save)
    out = tmp_path / "shards"
    code = main(["data", "prepare", "--corpus", str(corpus_file), "--tokenizer", str(tokenizer_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"fastbert: error: no space left on device: {tmp_path} (the prepared data shards: needs about ")
    assert line.endswith("; nothing was written")
    assert saved and os.listdir(tmp_path) == []  # no output, no staging directory
