"""Generate the JSON Schemas of the contract: ``python -m contracts.schemas [--write|--check]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .dmt import DmtSessionEvent
from .models import (
    DeadLetter,
    FileEvent,
    ReplayOutcome,
    SessionEvent,
    TransferEnd,
    TransferProgress,
    TransferStart,
    WebhookBody,
)
from .records import DeviceStatus, RecordWebhook, TelemetryRecord

SCHEMA_DIR = Path(__file__).parent / "schemas"

#: file name -> (model, title)
SCHEMAS: dict[str, tuple[Any, str]] = {
    "fleetgate.camera.sessions.v1.json": (SessionEvent, "fleetgate.camera.sessions.v1 value"),
    "transfer.start.v1.json": (TransferStart, "fleetgate.camera.chunks.v1 start record value"),
    "transfer.end.v1.json": (TransferEnd, "fleetgate.camera.chunks.v1 end record value"),
    "fleetgate.camera.progress.v1.json": (
        TransferProgress,
        "fleetgate.camera.progress.v1 value",
    ),
    "fleetgate.files.v1.json": (FileEvent, "fleetgate.files.v1 value"),
    "webhook.v1.json": (WebhookBody, "webhook body (POST)"),
    "webhook.record.v1.json": (RecordWebhook, "webhook body of a telemetry record (POST)"),
    "fleetgate.connector.deadletter.v1.json": (
        DeadLetter,
        "fleetgate.connector.deadletter.v1 value",
    ),
    "fleetgate.connector.replays.v1.json": (ReplayOutcome, "fleetgate.connector.replays.v1 value"),
    "fleetgate.records.v1.json": (TelemetryRecord, "fleetgate.records.v1 value"),
    "fleetgate.devices.v1.json": (DeviceStatus, "fleetgate.devices.v1 value"),
    "fleetgate.dmt.sessions.v1.json": (DmtSessionEvent, "fleetgate.dmt.sessions.v1 value"),
}


def render(model: Any, title: str) -> str:
    schema = TypeAdapter(model).json_schema(by_alias=True, mode="serialization")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title} | schema
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(model, title) for name, (model, title) in SCHEMAS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write the schemas")
    parser.add_argument("--check", action="store_true", help="fail if any schema is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = SCHEMA_DIR / name
        if args.write:
            SCHEMA_DIR.mkdir(exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(name)
    if stale and args.check:
        print("stale schemas (run `python -m contracts.schemas --write`):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
