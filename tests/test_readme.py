"""The README's examples are real: each JSON block parses as the contract says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import contracts
from contracts import models as wire

README = (Path(__file__).parents[1] / "README.md").read_text()


def json_blocks(section: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```json\n(.*?)```", body, re.DOTALL)


def test_session_event_example_is_valid() -> None:
    (block,) = json_blocks("Kafka topics")
    event = contracts.decode(contracts.SessionEvent, block.encode())
    assert isinstance(event, wire.Closed)


def test_webhook_example_is_valid() -> None:
    (block,) = json_blocks("Webhook payload")
    body = wire.WebhookBody.model_validate(json.loads(block))
    assert isinstance(body.data, wire.StoredFileData)
    assert body.data.key.startswith(body.data.imei + "/")


def test_readme_shows_the_two_commands() -> None:
    assert "make run" in README and "make test" in README
