"""The Mermaid state diagram is generated from TRANSITIONS, and the docs embed the current one."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

from camproto import TRANSITIONS, CommandId, LocalInput
from camproto.diagram import mermaid, status_table

DOC = Path(__file__).resolve().parents[2] / "docs" / "camera-protocol.md"


def test_docs_embed_the_generated_diagram() -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert mermaid() in blocks, "regenerate with: python -m camproto.diagram"


def test_docs_embed_the_generated_status_table() -> None:
    assert status_table() in DOC.read_text(), "regenerate: python -m camproto.diagram --status"
    assert status_table().count("\n") == 2 + 7  # header, rule, one row per open state


def test_every_transition_is_an_edge() -> None:
    edges = {
        (source, target): labels.split(" / ")
        for source, target, labels in re.findall(r"^    (\w+) --> (\w+): (.*)$", mermaid(), re.M)
    }
    for (state, trigger), targets in TRANSITIONS.items():
        if trigger in (LocalInput.CLOSE, LocalInput.EOF):
            continue
        label = trigger.name if isinstance(trigger, CommandId) else trigger.name.lower()
        for target in targets:
            assert label in edges[(state.name, target.name)]
    text = mermaid()
    assert text.startswith("stateDiagram-v2\n    [*] --> AWAIT_INIT\n")
    assert text.endswith("    CLOSED --> [*]\n")


def test_module_prints_the_diagram(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As ``python -m camproto.diagram``; the imported module is set aside so runpy runs it fresh.
    monkeypatch.delitem(sys.modules, "camproto.diagram")
    runpy.run_module("camproto.diagram", run_name="__main__")
    assert capsys.readouterr().out == mermaid()
    monkeypatch.delitem(sys.modules, "camproto.diagram", raising=False)
    monkeypatch.setattr(sys, "argv", ["diagram", "--status"])
    runpy.run_module("camproto.diagram", run_name="__main__")
    assert capsys.readouterr().out == status_table()
