"""Print the server's transition table as a Mermaid state diagram: ``python -m camproto.diagram``.

``docs/camera-protocol.md`` embeds the output; a test keeps the two the same.
"""

from __future__ import annotations

from ._wire import CommandId
from .server import TRANSITIONS, LocalInput


def mermaid() -> str:
    lines = ["stateDiagram-v2", "    [*] --> AWAIT_INIT"]
    edges: dict[tuple[str, str], list[str]] = {}
    for (state, trigger), targets in TRANSITIONS.items():
        if trigger in (CommandId.STATUS, LocalInput.CLOSE, LocalInput.EOF):
            continue  # allowed in every open state; noted below the diagram
        label = trigger.name if isinstance(trigger, CommandId) else trigger.name.lower()
        for next_state in sorted(targets, key=lambda s: s.name):
            edges.setdefault((state.name, next_state.name), []).append(label)
    for (source, target), labels in edges.items():
        lines.append(f"    {source} --> {target}: {' / '.join(labels)}")
    lines.append("    CLOSED --> [*]")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
