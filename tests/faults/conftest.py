"""Helpers for the fault suite: one clear line on stderr, never a traceback."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_error_line(capsys):
    """The single line a failed command printed on stderr (asserts there is exactly one, no traceback)."""

    def read() -> str:
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err, err
        assert len(err.splitlines()) == 1, err
        return err

    return read
