"""The ``fleetgate`` console script: dispatch table and lazy subcommand loading."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fleetgate import cli


def test_help_lists_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleetgate", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "simulate" in result.stdout
    assert result.stderr == ""


def test_missing_subcommand_module_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(
        cli.SUBCOMMANDS,
        "ghost",
        cli.Subcommand(
            help="Not written yet.",
            add_arguments="fleetgate_no_such_module.cli:add_arguments",
            run="fleetgate_no_such_module.cli:run",
        ),
    )
    with pytest.raises(SystemExit) as top_help:  # the top-level help never imports "ghost"
        cli.main(["--help"])
    assert top_help.value.code == 0
    assert "ghost" in capsys.readouterr().out

    assert cli.main(["ghost"]) == 2
    err = capsys.readouterr().err
    assert "subcommand 'ghost' is not available" in err
    assert "fleetgate_no_such_module.cli" in err
