"""The state diagram in docs/digital-matter-protocol.md is generated from TRANSITIONS."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

from dmtproto import TRANSITIONS, MessageType, OtherMessage
from dmtproto.diagram import EVERYWHERE, mermaid

DOC = Path(__file__).resolve().parents[2] / "docs" / "digital-matter-protocol.md"


def test_doc_embeds_the_generated_diagram() -> None:
    blocks = re.findall(r"```mermaid\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert mermaid() in blocks, "regenerate with: python -m dmtproto.diagram"


def test_every_transition_is_an_edge() -> None:
    edges = {
        (source, target): labels.split(" / ")
        for source, target, labels in re.findall(r"^    (\w+) --> (\w+): (.*)$", mermaid(), re.M)
    }
    for (state, trigger), targets in TRANSITIONS.items():
        if trigger in EVERYWHERE:
            continue
        if isinstance(trigger, MessageType):
            label = trigger.name
        elif isinstance(trigger, OtherMessage):
            label = "other (ignored)"
        else:
            label = f"{trigger.name.lower()}()"
        for target in targets:
            assert label in edges[(state.name, target.name)]


def test_main_prints_the_diagram(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As ``python -m dmtproto.diagram``; the imported module is set aside so runpy runs it fresh.
    monkeypatch.delitem(sys.modules, "dmtproto.diagram")
    runpy.run_module("dmtproto.diagram", run_name="__main__")
    assert capsys.readouterr().out == mermaid()
