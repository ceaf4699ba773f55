"""A binary Digital Matter device -> the ingestor -> Kafka -> the connector: an OEM-format
endpoint and a fleetgate-format endpoint receive the same records with the same values, the
OEM connector's dynamic fields filled in. Real broker, real sockets, real HTTP receivers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts.records import RecordWebhook
from tests.conftest import S3
from tests.connector.connector_helpers import (
    config_of,
    receivers,
    running,
    settings_for,
    wait_for,
)
from tests.dmt_e2e.dmt_helpers import Wire, tracker
from tests.dmt_e2e.dmt_helpers import running as ingestor_running

IMEI = "352093081234567"
SERIAL = 4242
ICCID = "89610180004123456789"
RECORDS = 5


async def device_uploads(kafka: str) -> None:
    """The tracker sends its records over a real socket; the ingestor commits them once
    Kafka has them."""
    device = tracker(IMEI, records=RECORDS, serial=SERIAL)
    async with ingestor_running(kafka) as (ingestor, _):
        wire = await Wire.open(ingestor.ports["dmt"], device, records_per_message=2)
        while not wire.hello_answered:
            await wire.read()
        assert wire.conn.upload() == RECORDS
        await wire.flush()
        while not wire.commits:
            await wire.read()
        assert wire.commits[0].ok and device.pending == []
        await wire.close()


def _oem_time(when: datetime | None) -> str:
    assert when is not None
    return when.strftime("%Y-%m-%d %H:%M:%S")


async def test_a_binary_device_reaches_an_oem_and_a_fleetgate_endpoint_alike(
    kafka: str, s3: S3
) -> None:
    await device_uploads(kafka)
    with receivers() as receiver:
        oem, plain = receiver(), receiver()
        config = config_of(
            {
                "name": "oem",
                "url": f"http://127.0.0.1:{oem.port}/dm/[IMEI]?sn=[SERIAL]&sim=[ICCID]",
                "format": "oem",
                "headers": {"X-Device": "[IMEI]", "X-Sim": "[ICCID]", "X-Serial": "[SERIAL]"},
            },
            {"name": "plain", "url": plain.url, "headers": {"X-Device": "[IMEI]/[SERIAL]"}},
        )
        async with running(settings_for(kafka, s3), config):
            await wait_for(
                lambda: len(oem.delivered()) == RECORDS and len(plain.delivered()) == RECORDS,
                "every record at both endpoints",
            )
        oem_posts, plain_posts = oem.delivered(), plain.delivered()
    # Dynamic fields, in the URL and in header values.
    for post in oem_posts:
        assert post.path == f"/dm/{IMEI}?sn={SERIAL}&sim={ICCID}"
        assert post.headers["x-device"] == IMEI
        assert post.headers["x-sim"] == ICCID and post.headers["x-serial"] == str(SERIAL)
        assert post.headers["content-type"] == "application/json"
    assert {p.headers["x-device"] for p in plain_posts} == {f"{IMEI}/{SERIAL}"}
    # The same records (the same webhook ids: the record ids) at both.
    assert sorted(p.event_id for p in oem_posts) == sorted(p.event_id for p in plain_posts)
    fleetgate = {
        (hook := RecordWebhook.model_validate_json(p.body)).data.record_id: hook.data
        for p in plain_posts
    }
    seen: list[int] = []
    for post in oem_posts:
        body: dict[str, Any] = post.json()
        record = fleetgate[post.event_id]
        assert (body["SerNo"], body["IMEI"], body["ICCID"]) == (SERIAL, IMEI, ICCID)
        assert (body["ProdId"], body["FW"]) == (34, "1.9")
        (entry,) = body["Records"]
        seen.append(entry["SeqNo"])
        assert entry["SeqNo"] == record.sequence
        assert entry["Reason"] == record.log_reason.code == 3
        assert entry["DateUTC"] == _oem_time(record.device_time)
        fields = {f["FType"]: f for f in entry["Fields"]}
        assert set(fields) == {0, 2, 6}
        position = record.position
        assert position is not None
        i = record.sequence - min(fleetgate[p.event_id].sequence for p in oem_posts)
        # The tracker's known values (tests/dmt_e2e/dmt_helpers.tracker), in OEM units,
        # equal to what the fleetgate envelope says in its own units.
        assert fields[0]["Lat"] == position.latitude == round(-33.8 + i / 1000, 7)
        assert fields[0]["Long"] == position.longitude == 151.2
        assert fields[0]["Spd"] == 1000 == round(position.speed_m_s * 100)  # type: ignore[operator]
        assert fields[0]["Head"] == 90 == position.heading_deg
        assert fields[0]["Alt"] == 40 == position.altitude_m
        assert fields[0]["PDOP"] == 12 and position.pdop == 1.2
        assert fields[0]["PosAcc"] == 5 == position.accuracy_m
        assert fields[0]["GpsStat"] == 1 and position.valid
        assert fields[0]["GpsUTC"] == _oem_time(position.fix_time)
        assert fields[2] == {"DIn": 1, "DOut": 0, "DevStat": 3, "FType": 2}
        assert (record.inputs, record.outputs, record.status) == (1, 0, 3)
        by_id = {m.id: m for m in record.analogues}
        assert fields[6]["AnalogueData"] == {"1": 4000 + i, "3": 2150}
        assert by_id[1].raw == 4000 + i and by_id[1].value == (4000 + i) / 1000
        assert by_id[3].raw == 2150 and by_id[3].value == 21.5
    assert len(set(seen)) == RECORDS
