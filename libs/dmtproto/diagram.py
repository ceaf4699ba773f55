"""Print the server's transition table as a Mermaid state diagram: ``python -m dmtproto.diagram``.

``docs/digital-matter-protocol.md`` embeds the output; a test keeps the two the same.
"""

from __future__ import annotations

from ._wire import MessageType
from .server import TRANSITIONS, LocalInput, OtherMessage

#: Inputs allowed in every open state; noted below the diagram instead of drawn.
EVERYWHERE = (LocalInput.CLOSE, LocalInput.EOF, LocalInput.TIMEOUT)


def mermaid() -> str:
    lines = ["stateDiagram-v2", "    [*] --> AWAIT_HELLO"]
    edges: dict[tuple[str, str], list[str]] = {}
    for (state, trigger), targets in TRANSITIONS.items():
        if trigger in EVERYWHERE:
            continue
        if isinstance(trigger, MessageType):
            label = trigger.name
        elif isinstance(trigger, OtherMessage):
            label = "other (ignored)"
        else:
            label = f"{trigger.name.lower()}()"
        for next_state in sorted(targets, key=lambda s: s.name):
            edges.setdefault((state.name, next_state.name), []).append(label)
    for (source, target), labels in edges.items():
        lines.append(f"    {source} --> {target}: {' / '.join(labels)}")
    lines.append("    CLOSED --> [*]")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(mermaid(), end="")
