"""Test hygiene: an in-process `start` (CliRunner) leaves no log handler behind that
writes to the runner's closed stderr (`conftest._logging_restored`). The two tests run
in this order, the second after the first, as a later test file's ran after
tests/test_cli_user_paths.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from daemon_helpers import free_ports
from typer.testing import CliRunner

from declora.cli.app import app


def test_an_in_process_start_configures_logging(tmp_path: Path) -> None:
    """Refused after `logs.configure`: no peers (nothing bound, no model loaded)."""
    args = ["start", "--checkpoint-dir", str(tmp_path / "state")]
    res = CliRunner().invoke(app, [*args, "--listen", f"127.0.0.1:{free_ports(1)[0]}"])
    assert res.exit_code == 2 and "error: no peers" in res.stderr, res.output


def test_a_later_tests_log_line_is_no_logging_error(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("", "declora"):
        streams = [getattr(h, "stream", None) for h in logging.getLogger(name).handlers]
        assert not any(getattr(s, "closed", False) for s in streams), name
    logging.getLogger("declora.test").info("an info line")
    logging.getLogger("declora.test").warning("a warning line")
    assert "Logging error" not in capsys.readouterr().err
