"""`ferry env apply`'s progress line: redrawn in place (carriage return, erase line), counts done and failed."""

from __future__ import annotations

import pytest

from cli.environments import ProgressLine


def test_progress_line_redraws_in_place_and_counts_failures(capsys: pytest.CaptureFixture[str]) -> None:
    bar = ProgressLine(4)
    bar.advance({"environment": "staging", "action": "started"})
    bar.advance({"environment": "broken", "action": "failed", "error": "spec refused"})
    bar.clear()
    out = capsys.readouterr().out
    frames = out.split("\r\033[K")
    assert frames[0] == "" and frames[-1] == ""  # every frame starts by erasing the line; the last one clears it
    assert frames[1].startswith("[" + "." * ProgressLine.WIDTH + "] 0/4 environments")
    assert frames[2].startswith("[" + "#" * 7 + "." * 23 + "] 1/4 environments  staging")
    assert "2/4 environments, 1 failed  broken" in frames[3] and "\n" not in out
