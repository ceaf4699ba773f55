"""Print the server's transition table as a Mermaid state diagram: ``python -m camproto.diagram``.

``python -m camproto.diagram --status`` prints the device-STATUS table as Markdown.
``docs/camera-protocol.md`` embeds both; a test keeps them the same.
"""

from __future__ import annotations

import sys

from ._wire import CommandId
from .transitions import STATUS_ACTIONS, TRANSITIONS, LocalInput, ServerState, StatusKind

_KIND_LABELS = {
    StatusKind.OK: "0 (OK)",
    StatusKind.NOT_AVAILABLE: "0x11 (file not available)",
    StatusKind.ERROR: "any other (error)",
}


def mermaid() -> str:
    lines = ["stateDiagram-v2", "    [*] --> AWAIT_INIT"]
    edges: dict[tuple[str, str], list[str]] = {}
    for (state, trigger), targets in TRANSITIONS.items():
        if trigger in (LocalInput.CLOSE, LocalInput.EOF):
            continue  # allowed in every open state; noted below the diagram
        label = trigger.name if isinstance(trigger, CommandId) else trigger.name.lower()
        for next_state in sorted(targets, key=lambda s: s.name):
            edges.setdefault((state.name, next_state.name), []).append(label)
    order = {state.name: index for index, state in enumerate(ServerState)}
    for source, target in sorted(edges, key=lambda edge: (order[edge[0]], order[edge[1]])):
        lines.append(f"    {source} --> {target}: {' / '.join(edges[source, target])}")
    lines.append("    CLOSED --> [*]")
    return "\n".join(lines) + "\n"


def status_table() -> str:
    """What the server does on each device STATUS, by state (from ``STATUS_ACTIONS``)."""
    kinds = list(StatusKind)
    lines = [
        "| state | " + " | ".join(_KIND_LABELS[kind] for kind in kinds) + " |",
        "|---" * (len(kinds) + 1) + "|",
    ]
    for state in ServerState:
        if (state, kinds[0]) not in STATUS_ACTIONS:
            continue
        actions = [STATUS_ACTIONS[state, kind].value for kind in kinds]
        lines.append(f"| {state.name} | " + " | ".join(actions) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(status_table() if "--status" in sys.argv[1:] else mermaid(), end="")
