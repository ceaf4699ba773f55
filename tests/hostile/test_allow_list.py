"""The IMEI allow-list: parsed strictly at start, enforced as soon as INIT names the IMEI."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from camproto import CameraDevice, CameraFile, DeviceFile, DualCamSlot
from contracts import models as wire
from ingestor import allowlist
from simulator import simulate
from tests.hostile.hostile_helpers import (
    INIT,
    Hostile,
    closed_by_server,
    closed_for,
    fleet_imeis,
    healthy_fleet,
    metric,
    read_sessions,
    upload,
)
from tests.ingestor.ingestor_helpers import make_ingestor, read_published, running, settings

OUTSIDER = 352094080000009
ALSO_OUTSIDE = 352094080000017
INLINE = 352094080000025  # allowed by imei_allow, not by the file
PHOTO = 1 << DualCamSlot.PHOTO_FRONT.value


class NoSink:
    """Start must fail before anything is sent."""

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        raise AssertionError("nothing may be sent")


def photo_camera(imei: int) -> CameraDevice:
    photo = CameraFile.for_slot(DualCamSlot.PHOTO_FRONT)
    return CameraDevice(
        imei=imei, files=[DeviceFile(photo, random.Random(imei).randbytes(5000), b"m")]
    )


def test_allow_list_file_and_inline_list_are_parsed(tmp_path: Path) -> None:
    path = tmp_path / "imeis.txt"
    path.write_text("# fleet A\n352094087000001  # front desk\n\n  12345\n", encoding="utf-8")
    allow = allowlist.from_settings(
        settings("127.0.0.1:1", imei_allow_list=str(path), imei_allow=" 352094087000002, ").camera
    )
    assert allow.imeis == frozenset({"352094087000001", "000000000012345", "352094087000002"})
    assert allow.refusal("352094087000001") is None
    assert allow.refusal("000000000012345") is None
    refusal = allow.refusal("352094087000003")
    assert refusal == f"IMEI 352094087000003 not in the allow-list ({path} + imei_allow)"
    assert (
        allowlist.from_settings(settings("127.0.0.1:1").camera).refusal("352094087000003") is None
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("352094087000001\n35209408700000X\n", "imeis.txt:2: '35209408700000X' is not an IMEI"),
        ("1234567890123456\n", "imeis.txt:1: '1234567890123456' is not an IMEI"),
        ("\uff13\uff15\uff12\n", "imeis.txt:1: '\uff13\uff15\uff12' is not"),  # fullwidth
        ("# nobody yet\n\n", "lists no IMEI; unset it to allow every IMEI"),
    ],
)
def test_a_broken_allow_list_stops_the_ingestor_at_start(
    tmp_path: Path, text: str, error: str
) -> None:
    path = tmp_path / "imeis.txt"
    path.write_text(text, encoding="utf-8")
    ingestor = make_ingestor(settings("127.0.0.1:1", imei_allow_list=str(path)), NoSink())
    with pytest.raises(ValueError) as info:
        asyncio.run(ingestor.start())
    assert error in str(info.value)
    assert ingestor.port is None  # never listened


def test_a_missing_allow_list_stops_the_ingestor_at_start(tmp_path: Path) -> None:
    missing = settings("127.0.0.1:1", imei_allow_list=str(tmp_path / "absent.txt"))
    with pytest.raises(FileNotFoundError):
        asyncio.run(make_ingestor(missing, NoSink()).start())
    with pytest.raises(ValueError, match="imei_allow: '35209408700000X' is not an IMEI"):
        allowlist.from_settings(settings("127.0.0.1:1", imei_allow="35209408700000X").camera)


async def test_imei_outside_the_allow_list_is_closed_with_its_reason(
    kafka: str, tmp_path: Path
) -> None:
    fleet_config = healthy_fleet(1)  # the port does not matter: only its IMEIs are used
    path = tmp_path / "allowed.txt"
    lines = [f"{imei}  # healthy fleet" for imei in fleet_imeis(fleet_config)]
    path.write_text("# IMEIs allowed to upload\n" + "\n".join(lines) + "\n", encoding="utf-8")
    config = settings(
        kafka, imei_allow_list=str(path), imei_allow=str(INLINE), hello_timeout_seconds=5.0
    )
    refused_before = metric(
        "fleetgate_ingestor_sessions_closed_total", protocol="camera", reason="not_allowed"
    )
    async with running(config) as ingestor:
        assert ingestor.port is not None
        port = ingestor.port
        fleet = asyncio.create_task(simulate(healthy_fleet(port)))
        # A real camera outside the list: no file is asked of it, the socket is closed.
        outsider = photo_camera(OUTSIDER)
        assert await upload(port, outsider) == [] and outsider.uploaded == []
        # INIT and garbage in one write: the allow-list decides, not the garbage.
        both = await Hostile.open(port)
        await both.send(INIT.pack(0, 5, ALSO_OUTSIDE, PHOTO) + b"\xff\xff\x00\x10garbage")
        outcome = await closed_by_server(both.reader, within=5)
        both.close()
        assert outcome.received == b"" and outcome.ending in ("eof", "reset")
        # The inline list adds to the file.
        inline = photo_camera(INLINE)
        assert len(await upload(port, inline)) == 1
        report = await asyncio.wait_for(fleet, 45)
        assert report.ok, report.summary()

    refused = metric(
        "fleetgate_ingestor_sessions_closed_total", protocol="camera", reason="not_allowed"
    )
    assert refused - refused_before == 2
    published = await read_published(kafka, ends=report.files + 1)
    closed = (await read_sessions(kafka, closed_for({both.peer}))).closed_by_peer()
    by_imei: dict[str | None, list[Any]] = {}
    for event in published.sessions:
        by_imei.setdefault(event.imei, []).append(event)
    source = f"{path} + imei_allow"
    for imei in (OUTSIDER, ALSO_OUTSIDE):
        name = f"{imei:015d}"
        (event,) = by_imei[name]  # nothing but the closing event carries its IMEI
        assert isinstance(event, wire.Closed) and not event.clean
        assert event.reason == f"IMEI {name} not in the allow-list ({source})"
        assert all(start.imei != name for start in published.starts.values())
    assert closed[both.peer].imei == f"{ALSO_OUTSIDE:015d}"
    assert any(start.imei == f"{INLINE:015d}" for start in published.starts.values())
