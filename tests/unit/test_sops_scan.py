"""activities.secrets.decrypt's scan of a release: SOPS files found by their text, a file past the bounds named
from its head and tail without reading it whole, a plain large file and a binary file left alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activities.secrets.decrypt import find_sops_files
from ferry.sops import MAX_SOPS_FILE_BYTES, SopsRefused
from tests.unit.test_sops import DOTENV, YAML


def test_the_scan_finds_sops_files_and_leaves_the_rest(tmp_path: Path) -> None:
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "db.yaml").write_text(YAML)
    (tmp_path / "api.env").write_text(DOTENV)
    (tmp_path / "plain.yaml").write_text("a: b\n" * (MAX_SOPS_FILE_BYTES // 4))  # large, and plain
    (tmp_path / "blob.bin").write_bytes(os.urandom(8192))
    assert [f.path for f in find_sops_files(tmp_path)] == ["api.env", "deep/er/db.yaml"]


def test_a_sops_file_past_the_bound_is_refused_by_its_head_and_tail(tmp_path: Path) -> None:
    (tmp_path / "huge.yaml").write_text("pad: " + "x" * (3 * MAX_SOPS_FILE_BYTES) + "\n" + YAML)
    with pytest.raises(SopsRefused, match="huge.yaml: SOPS file of .* bytes, more than"):
        find_sops_files(tmp_path)
