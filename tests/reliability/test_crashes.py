"""Faults on the running pipeline: processes killed with SIGKILL or stopped with SIGTERM, S3
away for 30 s, the broker restarted. Every service is a real ``python -m fleetgate`` process
on a real broker (Apache Kafka; Tansu for the broker restarts) and S3 server (s3rver); devices
speak TCP; webhooks go over HTTP.

Each test prints its figures (``-s`` shows them; the README's "Reliability" section quotes
them).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from camproto import DATA_CHUNK, CameraDevice, crc16
from simulator import ContentSpec, Faults, Fleet, SimulationConfig, simulate
from tests.helpers import eventually
from tests.ingestor.ingestor_helpers import Hopper, read_progress
from tests.reliability.reliability_helpers import camera_file, pipeline

MB = 1_000_000


def figure(name: str, **values: object) -> None:
    print(f"\n[reliability] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


async def test_ingestor_killed_mid_transfer_device_resumes_on_another(
    kafka: str, tmp_path: Path
) -> None:
    imei, item = camera_file(6 * MB)
    size = len(item.data)
    async with pipeline(tmp_path, kafka=kafka) as line:
        a, b = line.ingestor("a"), line.ingestor("b")
        line.assembler()
        line.connector()
        await a.wait_listening()
        await b.wait_listening()
        assert a.port is not None and b.port is not None
        device = CameraDevice(imei=imei, files=[item])
        hopper = Hopper(device, [a.port, b.port], rate=2 * MB)  # a slow cellular link
        upload = asyncio.create_task(hopper.run(within=60))
        await eventually(lambda: hopper.sent >= 0.4 * size, 20, "40 % of the video sent")
        sent, killed = hopper.sent, time.monotonic()
        a.kill()  # SIGKILL mid-transfer: nothing flushed, the socket just dies
        await upload
        accepted = time.monotonic() - killed
        await line.until(lambda: len(line.hooks.stored()) >= 1, 60, "the webhook")
        hooked = time.monotonic() - killed

        (resumed_at,) = [offset for offset in hopper.resumed if offset]
        by_a = [p.offset for p in await read_progress(line.bootstrap) if p.ingestor == "a"]
        objects = line.objects()
        (data,) = line.hooks.stored().values()
    figure(
        "ingestor SIGKILL",
        size=size,
        sent_before_kill=sent,
        durable_by_a=max(by_a),
        resumed_at=resumed_at,
        resent=size - resumed_at,
        kill_to_accepted_s=round(accepted, 2),
        kill_to_webhook_s=round(hooked, 2),
    )
    assert hopper.resumed[0] == 0 and 0 < resumed_at <= max(by_a) < sent
    assert resumed_at % DATA_CHUNK == 0
    assert resumed_at >= 0.3 * size  # most of what had gone out was not sent again
    assert list(objects.values()) == [item.data]  # one object, intact
    assert data["sha256"] == hashlib.sha256(item.data).hexdigest()
    assert data["crc16"] == crc16(item.data) and data["key"] in objects


async def test_ingestor_sigterm_cuts_at_a_durable_point_and_device_resumes(
    kafka: str, tmp_path: Path
) -> None:
    imei, item = camera_file(6 * MB, seed=2)
    size = len(item.data)
    async with pipeline(tmp_path, kafka=kafka) as line:
        a = line.ingestor("a", drain_timeout_seconds="1", close_timeout_seconds="5")
        b = line.ingestor("b")
        line.assembler()
        await a.wait_listening()
        await b.wait_listening()
        assert a.port is not None and b.port is not None
        device = CameraDevice(imei=imei, files=[item])
        hopper = Hopper(device, [a.port, b.port], rate=2 * MB, backoff=0.3)
        upload = asyncio.create_task(hopper.run(within=60))
        await eventually(lambda: hopper.sent >= 0.25 * size, 20, "a quarter of the video sent")
        stopped = time.monotonic()
        assert await a.terminate(within=20) == 0  # SIGTERM: drain 1 s, cut, exit
        exited = time.monotonic() - stopped
        await upload
        await line.until(lambda: len(line.objects()) >= 1, 60, "the object")
        stored = time.monotonic() - stopped

        (resumed_at,) = [offset for offset in hopper.resumed if offset]
        final = max(p.offset for p in await read_progress(line.bootstrap) if p.ingestor == "a")
        closed = a.events("session_closed")
        objects = line.objects()
    figure(
        "ingestor SIGTERM",
        size=size,
        durable_at_cut=final,
        resumed_at=resumed_at,
        sigterm_to_exit_s=round(exited, 2),
        sigterm_to_stored_s=round(stored, 2),
    )
    assert hopper.endings[0].endswith("CLOSE")  # told to go, not dropped
    (cut,) = [c for c in closed if c.get("imei")]  # (the others: readiness probes)
    assert cut["reason"] == "shutdown" and "durable up to byte" in cut["detail"]
    # resumed one packet before where a made it durable: that packet is compared with Kafka's
    assert resumed_at == final - DATA_CHUNK and final > 0.25 * size
    assert list(objects.values()) == [item.data]


async def test_assembler_killed_mid_file_restarts_and_stores_it_once(
    kafka: str, tmp_path: Path
) -> None:
    imei, item = camera_file(6 * MB, seed=3)
    async with pipeline(tmp_path, kafka=kafka) as line:
        ingestor = line.ingestor("a")
        assembler = line.assembler()
        line.connector()
        await ingestor.wait_listening()
        await assembler.wait_logged("assembler_started")
        assert ingestor.port is not None
        spool = tmp_path / "spool"

        def held() -> int:
            return sum(part.stat().st_size for part in spool.glob("pid-*/files/*.part"))

        hopper = Hopper(CameraDevice(imei=imei, files=[item]), [ingestor.port], rate=2 * MB)
        upload = asyncio.create_task(hopper.run(within=60))
        await line.until(lambda: held() >= 1 * MB, 20, "the assembler holding 1 MB of the file")
        held_at_kill = held()
        assembler.kill()  # SIGKILL mid-file: its spool and its uncommitted offsets are gone
        killed = time.monotonic()
        await upload  # the device does not notice: the ingestor writes to Kafka
        assembler.start()
        await line.until(lambda: len(line.hooks.stored()) >= 1, 60, "the webhook")
        recovered = time.monotonic() - killed
        await asyncio.sleep(0.3)  # let a duplicate, if any, arrive too
        objects = line.objects()
        stored_events = assembler.events("file_stored")
        rewinds = assembler.events("rewind")
        hooks = line.hooks.bodies()
    figure(
        "assembler SIGKILL",
        size=len(item.data),
        held_at_kill=held_at_kill,
        restart_to_webhook_s=round(recovered, 2),
        rewinds=len(rewinds),
        webhooks=len(hooks),
    )
    assert list(objects.values()) == [item.data]  # exactly one object, intact
    assert len({h["data"]["event_id"] for h in hooks}) == 1  # one file.stored (maybe twice)
    assert stored_events and stored_events[0]["sha256"] == hashlib.sha256(item.data).hexdigest()


async def test_connector_killed_mid_delivery_delivers_after_restart(
    kafka: str, tmp_path: Path
) -> None:
    imei, item = camera_file(200_000, seed=4)
    async with pipeline(tmp_path, kafka=kafka) as line:
        ingestor = line.ingestor("a")
        line.assembler()
        connector = line.connector()
        await ingestor.wait_listening()
        assert ingestor.port is not None
        line.hooks.hold.clear()  # the endpoint takes the request and keeps it waiting
        hopper = Hopper(CameraDevice(imei=imei, files=[item]), [ingestor.port])
        await hopper.run(within=30)
        await line.until(lambda: line.hooks.held >= 1, 60, "a webhook request in flight")
        connector.kill()  # SIGKILL while the POST waits for its answer
        line.hooks.hold.set()
        restarted = time.monotonic()
        connector.start()
        await line.until(lambda: len(line.hooks.bodies()) >= 2, 60, "the webhook again")
        redelivered = time.monotonic() - restarted
        bodies = line.hooks.bodies()
    figure(
        "connector SIGKILL", deliveries=len(bodies), restart_to_redelivery_s=round(redelivered, 2)
    )
    first, again = bodies[0]["data"], bodies[1]["data"]
    assert first["event_id"] == again["event_id"]  # the same event, at least once
    assert again["sha256"] == hashlib.sha256(item.data).hexdigest()


OUTAGE = 30.0


async def test_s3_away_for_30_seconds_loses_nothing(kafka: str, tmp_path: Path) -> None:
    async with pipeline(tmp_path, kafka=kafka) as line:
        ingestor = line.ingestor("a")
        assembler = line.assembler()
        line.connector()
        await ingestor.wait_listening()
        await assembler.wait_logged("assembler_started")
        assert ingestor.port is not None and line.s3 is not None
        line.s3.stop()  # S3 gone: nothing listens on its port
        down = time.monotonic()
        config = SimulationConfig(
            port=ingestor.port, devices=4, dualcam_ratio=0.5, seed=21, timeout=OUTAGE - 5,
            content=ContentSpec(photos=1, videos=1, photo_size=60_000, video_size=1 * MB),
            faults=Faults(slow=400_000),  # cellular links: uploads spread over the outage
        )  # fmt: skip
        report = await simulate(config)  # devices hear "done": the files are in Kafka
        ingested = time.monotonic() - down
        assert report.ok, report.summary()
        assert not line.hooks.bodies()  # nothing got through
        await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
        line.start_s3()  # same port, same directory
        back = time.monotonic()
        expected = {
            (f"{plan.imei:015d}", item.file.path): item.data
            for plan in Fleet(config).plans
            for item in plan.files(config.content)
        }
        await line.until(lambda: len(line.hooks.stored()) >= len(expected), 60, "every webhook")
        caught_up = time.monotonic() - back
        await asyncio.sleep(0.3)
        objects = line.objects()
        stored = line.hooks.stored()
        s3_errors = len(assembler.events("s3_error"))
    figure(
        "S3 outage",
        outage_s=round(back - down, 1),
        files=len(expected),
        accepted_during_outage=report.files_accepted,
        ingested_in_s=round(ingested, 1),
        s3_errors_retried=s3_errors,
        s3_back_to_all_webhooks_s=round(caught_up, 2),
    )
    assert report.files_accepted == len(expected) and ingested < OUTAGE
    assert s3_errors > 0  # the assembler met the outage and retried
    assert len(objects) == len(expected) == len(stored)  # each file once
    for data in stored.values():
        assert objects[data["key"]] == expected[(data["imei"], data["file"]["identifier"])]


async def test_broker_restart_services_carry_on(tmp_path: Path) -> None:
    """Tansu keeps topics in memory: a restart loses every record and offset. What survives
    is the services: without a restart of their own they go on with new uploads, and a
    transfer caught in the restart is not confirmed until it is whole in the new log."""
    first_imei, first = camera_file(300_000, seed=5)
    caught_imei, caught = camera_file(2 * MB, seed=7)
    new_imei, new = camera_file(300_000, seed=6)
    async with pipeline(tmp_path) as line:
        ingestor = line.ingestor("a", ack_timeout_seconds="5", kafka_request_timeout_ms="5000")
        assembler = line.assembler()
        await ingestor.wait_listening()
        assert ingestor.port is not None and line.broker is not None
        await Hopper(CameraDevice(imei=first_imei, files=[first]), [ingestor.port]).run(30)
        await line.until(lambda: len(line.objects()) == 1, 60, "the first object")

        in_flight = Hopper(
            CameraDevice(imei=caught_imei, files=[caught]), [ingestor.port], rate=1 * MB,
            backoff=0.3,
        )  # fmt: skip
        uploading = asyncio.create_task(in_flight.run(within=90))
        await eventually(lambda: in_flight.sent >= 0.4 * len(caught.data), 20, "40 % sent")
        line.broker.kill()  # SIGKILL the broker, then a fresh one on the same port
        restarted = time.monotonic()
        await line.start_broker()
        hopper = Hopper(CameraDevice(imei=new_imei, files=[new]), [ingestor.port], backoff=0.3)
        await hopper.run(within=90)
        accepted = time.monotonic() - restarted
        await uploading
        await line.until(lambda: len(line.objects()) == 3, 90, "the objects")
        stored = time.monotonic() - restarted
        await asyncio.sleep(0.3)
        objects = line.objects()
        assert ingestor.alive and assembler.alive  # neither was restarted
        resets = ingestor.events("chunk_log_reset") + ingestor.events("resume_point_lost")
    figure(
        "broker restart",
        new_upload_connections=hopper.connections,
        restart_to_new_accepted_s=round(accepted, 2),
        caught_connections=in_flight.connections,
        caught_resumed=in_flight.resumed,
        resets_detected=len(resets),
        restart_to_all_stored_s=round(stored, 2),
    )
    assert sorted(objects.values()) == sorted([first.data, caught.data, new.data])
    assert len(in_flight.accepted) == 1


async def test_broker_keeping_its_data_restarts_under_a_transfer(tmp_path: Path) -> None:
    """Tansu storing in S3 (``FLEETGATE_BROKER_STORAGE=s3``) keeps its records across a
    restart, but a partition written before it is read again restarts at offset 0 (Tansu
    0.6.0). Either way the device is confirmed only for a file whole in Kafka: it resumes
    from its durable offset, or the ingestor sees the log go back and has it start over."""
    imei, item = camera_file(1 * MB, seed=8)
    async with pipeline(tmp_path, durable_broker=True) as line:
        ingestor = line.ingestor("a", ack_timeout_seconds="5", kafka_request_timeout_ms="5000")
        line.assembler()
        await ingestor.wait_listening()
        assert ingestor.port is not None and line.broker is not None
        device = CameraDevice(imei=imei, files=[item])
        hopper = Hopper(device, [ingestor.port], rate=200_000, backoff=0.3)
        upload = asyncio.create_task(hopper.run(within=90))
        await eventually(lambda: hopper.sent >= 0.4 * len(item.data), 20, "40 % sent")
        line.broker.kill()
        restarted = time.monotonic()
        await line.start_broker()
        await upload
        accepted = time.monotonic() - restarted
        await line.until(lambda: len(line.objects()) == 1, 90, "the object")
        stored = time.monotonic() - restarted
        objects = line.objects()
        resets = ingestor.events("chunk_log_reset") + ingestor.events("resume_point_lost")
    figure(
        "durable broker restart",
        size=len(item.data),
        connections=hopper.connections,
        resumed=hopper.resumed,
        resets_detected=len(resets),
        restart_to_accepted_s=round(accepted, 2),
        restart_to_stored_s=round(stored, 2),
    )
    assert list(objects.values()) == [item.data] and len(hopper.accepted) == 1
    assert any(hopper.resumed) or resets  # resumed, or started over knowingly
