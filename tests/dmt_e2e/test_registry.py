"""The device registry (``fleetgate.devices.v1``) on a real broker over real sockets: cameras
appear in it too, and a device's latest status keeps what earlier sessions told, on whichever
ingestor they ran (each ingestor reads the registry before accepting and follows it)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from structlog.testing import capture_logs

from contracts import Topic
from contracts.dmt import DmtClosed
from contracts.models import encode
from contracts.records import DeviceStatus
from dmtproto import Analogue16, Analogue16Field, DmtDevice, Hello
from dmtproto.oem_json import decode_oem_json
from ingestor.registry import DeviceRegistry
from simulator import ContentSpec, Fleet, SimulationConfig, simulate
from tests.dmt_e2e.dmt_helpers import Landed, Wire, read_landed, running, tracker
from tests.helpers import eventually
from tests.ingestor import ingestor_helpers
from tests.ingestor_oem import oem_helpers
from tests.ingestor_oem.oem_helpers import EDGE


async def test_cameras_appear_in_the_registry(kafka: str) -> None:
    async with ingestor_helpers.running(ingestor_helpers.settings(kafka)) as ingestor:
        assert ingestor.port is not None
        config = SimulationConfig(
            port=ingestor.port,
            devices=3,
            content=ContentSpec(photos=1, videos=0, photo_size=5_000, video_size=0),
            seed=5,
            timeout=60,
        )
        report = await simulate(config)
        assert report.ok, report.summary()
    imeis = {f"{plan.imei:015d}" for plan in Fleet(config).plans}
    landed = await read_landed(kafka, lambda out: imeis <= set(out.devices))
    for imei in imeis:
        status = landed.devices[imei]
        assert status.protocols == ["camera"]
        assert status.last_connection is not None
        assert status.last_connection.protocol == "camera"
        assert status.last_connection.ingestor == "test-ingestor"


# A device that comes back, to another ingestor ----------------------------------------------

IMEI = "352093081234567"
#: What A's records said last (see ``tracker``): record 4 of 5.
LAST_LATITUDE, LAST_BATTERY, LAST_TEMPERATURE = -33.796, 4.004, 21.5


def _again(imei: str, *, firmware_minor: int = 9, records: int = 0) -> DmtDevice:
    """The tracker of ``tracker(imei)`` on a later connection: its HELLO (firmware 1.<minor>),
    then ``records`` records without a GPS field, logged after the first connection's (battery
    3900 + i mV, no temperature)."""
    device = DmtDevice(
        Hello(
            serial=4242, imei=imei, iccid="89610180004123456789", product_id=34,
            hardware_revision=2, firmware_major=1, firmware_minor=firmware_minor,
        )
    )  # fmt: skip
    device.next_sequence = 100
    for i in range(records):
        device.log(
            time=420_100_000 + 60 * i,
            log_reason=11,
            fields=(Analogue16Field(values=(Analogue16(1, 3900 + i),)),),
        )
    return device


async def _session(port: int, device: DmtDevice) -> None:
    """One connection: HELLO answered, the device's records (if any) committed, closed."""
    wire = await Wire.open(port, device)
    try:
        while not wire.hello_answered:
            await wire.read()
        if device.pending:
            wire.conn.upload()
            await wire.flush()
            while not wire.commits:
                await wire.read()
            assert wire.commits[-1].ok and not device.pending
    finally:
        await wire.close()


async def _knows(registry: DeviceRegistry, imei: str) -> None:
    """Until ``registry`` holds a status of ``imei`` with a position. Its start-up read
    normally has it already; but that read ends at the first quiet 0.3 s, which a loaded
    machine can produce with records left: the test then waits for the reader that follows."""
    await eventually(
        lambda: bool((s := registry.latest(imei)) and s.last_position), 20, f"{imei} read"
    )


def _placed(landed: Landed, imei: str) -> bool:
    """The latest status of ``imei`` has a position."""
    status = landed.devices.get(imei)
    return bool(status and status.last_position)


def _last_connection_by(ingestor: str) -> Callable[[Landed], bool]:
    def done(landed: Landed) -> bool:
        status = landed.devices.get(IMEI)
        return bool(
            status and status.last_connection and status.last_connection.ingestor == ingestor
        )

    return done


async def _listed(kafka: str) -> dict[str, dict[str, Any]]:
    """``fleetgate devices --json``, run as a user would, by IMEI."""
    env = os.environ | {"FLEETGATE_KAFKA_BOOTSTRAP": kafka}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetgate", "devices", "--json", "--timeout-seconds", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    async with asyncio.timeout(120):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return {d["imei"]: d for d in json.loads(out)}


async def _first_visit(kafka: str) -> None:
    """Ingestor A: the tracker sends its five records with GPS; A's status is in Kafka."""
    async with running(kafka, edge={"instance": "ingestor-a"}, read_registry=True) as (a, _):
        await _session(a.ports["dmt"], tracker(IMEI, records=5))

        def placed(landed: Landed) -> bool:
            status = landed.devices.get(IMEI)
            return bool(status and status.last_position and status.battery_voltage == LAST_BATTERY)

        await read_landed(kafka, placed)


@pytest.mark.parametrize("records", [0, 3], ids=["hello-only", "records-without-gps"])
async def test_a_device_back_on_another_ingestor_keeps_what_earlier_sessions_told(
    kafka: str, records: int
) -> None:
    await _first_visit(kafka)
    # Ingestor B, started after A's statuses are in Kafka, reads them before accepting.
    edge = {"instance": "ingestor-b"}
    async with running(kafka, edge=edge, read_registry=True) as (b, _):
        await _knows(b.registry, IMEI)
        device = _again(IMEI, firmware_minor=10, records=records)
        await _session(b.ports["dmt"], device)
        landed = await read_landed(kafka, _last_connection_by("ingestor-b"))
        listed = await _listed(kafka)
    status = landed.devices[IMEI]  # the topic's latest record of the device
    assert status.last_connection is not None and status.last_connection.ingestor == "ingestor-b"
    # what B's session told replaces: firmware, and the battery of its newer records
    assert status.firmware == "1.10"
    assert status.battery_voltage == (LAST_BATTERY if records == 0 else 3.902)
    # what it did not tell is A's: position, temperature, identity
    assert status.last_position is not None
    assert abs(status.last_position.latitude - LAST_LATITUDE) < 1e-6
    assert status.temperature_c == LAST_TEMPERATURE
    assert status.iccid == "89610180004123456789" and status.serial == 4242
    assert status.protocols == ["dmt"]
    # fleetgate devices shows the same
    shown = listed[IMEI]
    assert shown["last_connection"]["ingestor"] == "ingestor-b"
    assert shown["last_position"]["latitude"] == status.last_position.latitude
    assert shown["battery_voltage"] == status.battery_voltage
    assert shown["temperature_c"] == LAST_TEMPERATURE and shown["firmware"] == "1.10"


async def test_a_camera_session_after_a_tracker_session_keeps_the_tracker_fields(
    kafka: str,
) -> None:
    """A DualCam behind a tracker reports with the tracker's IMEI: the camera's session (on
    another ingestor) adds its protocol and connection, and keeps what the tracker told."""
    config = SimulationConfig(
        port=1, devices=1, content=ContentSpec(photos=1, videos=0, photo_size=3_000, video_size=0),
        seed=9, timeout=60,
    )  # fmt: skip
    imei = f"{Fleet(config).plans[0].imei:015d}"
    async with running(kafka, edge={"instance": "ingestor-a"}, read_registry=True) as (a, _):
        await _session(a.ports["dmt"], tracker(imei, records=3))
        await read_landed(kafka, lambda out: _placed(out, imei))
    edge = {"instance": "ingestor-b"}
    async with running(kafka, edge=edge, read_registry=True, camera=True) as (b, _):
        await _knows(b.registry, imei)
        report = await simulate(replace(config, port=b.ports["camera"]))
        assert report.ok, report.summary()

        def camera_seen(landed: Landed) -> bool:
            status = landed.devices.get(imei)
            connection = status and status.last_connection
            return bool(connection and connection.protocol == "camera")

        landed = await read_landed(kafka, camera_seen)
    status = landed.devices[imei]
    assert status.protocols == ["dmt", "camera"]
    assert status.last_connection is not None and status.last_connection.ingestor == "ingestor-b"
    assert status.firmware == "1.9" and status.iccid == "89610180004123456789"
    assert status.last_position is not None
    assert abs(status.last_position.latitude - (-33.798)) < 1e-6
    assert status.battery_voltage == 4.002 and status.temperature_c == 21.5


async def test_a_status_read_back_late_does_not_replace_a_newer_one(kafka: str) -> None:
    """Two ingestors serving one IMEI: each follows the topic, so a session on A publishes
    on top of B's newer status (B's connection stays the last), not over it."""
    edge_a, edge_b = {"instance": "ingestor-a"}, {"instance": "ingestor-b"}
    async with (
        running(kafka, edge=edge_a, read_registry=True) as (a, _),
        running(kafka, edge=edge_b, read_registry=True) as (b, _),
    ):
        first = tracker(IMEI, records=2)
        wire = await Wire.open(a.ports["dmt"], first)  # A's session stays open
        while not wire.hello_answered:
            await wire.read()
        # the device is also (again) on B, which learns a new firmware
        await _session(b.ports["dmt"], _again(IMEI, firmware_minor=10))

        def a_knows_b() -> bool:
            status = a.registry.latest(IMEI)
            return status is not None and status.firmware == "1.10"

        await eventually(a_knows_b, 20, "ingestor A reading B's status")
        # A's session now sends records and ends: its statuses are folded into B's
        wire.conn.upload()
        await wire.flush()
        while not wire.commits:
            await wire.read()
        await wire.close()

        def a_done(landed: Landed) -> bool:
            closed = any(isinstance(e, DmtClosed) and e.ingestor == "ingestor-a"
                         for e in landed.sessions)  # fmt: skip
            return closed and _placed(landed, IMEI)

        landed = await read_landed(kafka, a_done)
    status = landed.devices[IMEI]
    assert status.last_position is not None and status.firmware == "1.10"
    assert status.last_connection is not None and status.last_connection.ingestor == "ingestor-b"


async def test_the_oem_intake_publishes_on_top_of_the_last_known_status(kafka: str) -> None:
    """A tracker talks TCP to one ingestor, then its OEM Server posts a body (records without
    a fix, older than the tracker's) to another's JSON intake: the intake's status has the new
    connection and identity and keeps the tracker's position and power."""
    body = decode_oem_json(EDGE)
    imei = body.device.imei
    async with running(kafka, edge={"instance": "ingestor-a"}) as (a, _):
        await _session(a.ports["dmt"], tracker(imei, records=3))
        await read_landed(kafka, lambda out: _placed(out, imei))
    edge = {"instance": "ingestor-b"}
    async with (
        oem_helpers.running(kafka, edge=edge, read_registry=True, auth="none") as served,
        httpx.AsyncClient() as client,
    ):
        await _knows(served.intake.registry, imei)
        response = await client.post(served.url, content=EDGE)
        assert response.status_code == 200, response.text

        def posted(landed: Landed) -> bool:
            status = landed.devices.get(imei)
            return bool(status and status.last_connection and status.firmware == "1.12")

        landed = await read_landed(kafka, posted)
    status = landed.devices[imei]
    assert status.last_connection is not None and status.last_connection.ingestor == "ingestor-b"
    assert status.hardware_revision == 1 and status.iccid == body.device.iccid  # the body's
    assert status.last_position is not None  # the tracker's
    assert abs(status.last_position.latitude - (-33.798)) < 1e-6
    assert status.battery_voltage == 4.002 and status.temperature_c == 21.5


async def test_the_start_up_read_is_bounded_and_goes_on_behind(kafka: str) -> None:
    """An ingestor that cannot catch up with the registry in time accepts devices anyway,
    and keeps reading: statuses written later still reach its view."""
    edge = {
        "instance": "ingestor-a",
        "registry_catchup_idle_seconds": 60,  # never caught up...
        "registry_catchup_timeout_seconds": 0.5,  # ...so the timeout ends the wait
    }
    with capture_logs() as logs:
        async with running(kafka, edge=edge, read_registry=True) as (a, _):
            assert [e for e in logs if e["event"] == "registry_catch_up_timeout"]
            await _session(a.ports["dmt"], tracker(IMEI, records=1))  # accepted
            elsewhere = DeviceStatus(
                imei="351358810439486", protocols=["dmt"], firmware="7.7",
                last_seen=datetime.now(UTC), updated_at=datetime.now(UTC),
            )  # fmt: skip
            producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
            await producer.start()
            try:
                await producer.send_and_wait(
                    Topic.DEVICES, encode(elsewhere), key=elsewhere.imei.encode()
                )
            finally:
                await producer.stop()

            def known() -> bool:
                status = a.registry.latest(elsewhere.imei)
                return status is not None and status.firmware == "7.7"

            await eventually(known, 20, "the status written after the start")
            assert a.registry.latest(IMEI) is not None  # its own, entered as published
