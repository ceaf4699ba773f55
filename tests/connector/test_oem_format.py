"""``format: oem``: records as the OEM Server's traditional JSON, table-tested against the
captures; the endpoint settings (format, batch, dynamic fields) and their errors."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.batch import Batcher, RecordBatch, batch_id
from connector.config import ConfigError
from connector.delivery import EndpointClient
from connector.events import accepts, decode_event, dynamic_fields, render, source_topics
from connector.oem import oem_body, oem_json
from connector.presign import Presigner
from connector.settings import ConnectorSettings
from contracts import Topic, encode
from contracts.dmt import telemetry_record
from contracts.records import (
    DeviceIdentity,
    LogReason,
    Measurement,
    Position,
    RecordWebhook,
    TelemetryRecord,
)
from dmtproto import Analogue16Field, Record, decode_message_records
from tests.connector.connector_helpers import config_of, stored
from tests.dmtproto.dmtproto_helpers import HELLO, VECTOR_DATA

VECTORS = Path(__file__).parent / "vectors" / "dmt_http_json.txt"
RECEIVED = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def traditional_vector() -> dict[str, Any]:
    """The traditional-format body of the capture (the line starting with ``{"SerNo"``)."""
    (line,) = [x for x in VECTORS.read_text().splitlines() if x.startswith('{"SerNo"')]
    body: dict[str, Any] = json.loads(line)
    return body


def _at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


# The capture's 5 records as fleetgate decodes a record: (SeqNo, Reason, DateUTC, DIn,
# analogue16 raw by id, analogue32 raw by id), from the annotations of the vector file.
CAPTURE = [
    (125, 11, "2017-05-11 05:58:44", 2, {1: 14641, 3: 2484, 4: 26, 5: 10868},
     {11: 34, 12: 0, 13: 309, 14: 9921, 15: 3}),
    (128, 11, "2017-05-11 17:59:45", 2, {1: 14607, 3: 2752, 4: 26, 5: 11062},
     {11: 34, 12: 1, 13: 325, 14: 10881, 15: 3}),
    (130, 9, "2017-05-11 19:30:03", 6, {1: 14599, 3: 2731, 4: 27, 5: 10965},
     {11: 34, 12: 2, 13: 329, 14: 11121, 15: 3}),
    (131, 11, "2017-05-11 19:32:03", 6, {1: 14403, 3: 2783, 4: 27, 5: 10965},
     {11: 34, 12: 2, 13: 330, 14: 11181, 15: 3}),
    (133, 11, "2017-05-11 19:36:15", 6, {1: 14319, 3: 2898, 4: 23, 5: 10965},
     {11: 34, 12: 3, 13: 331, 14: 11241, 15: 3}),
]  # fmt: skip
SCALE = {1: ("battery_voltage", 0.001, "V"), 3: ("temperature", 0.01, "°C"), 4: ("signal", 1, None)}


def capture_record(row: tuple[Any, ...]) -> TelemetryRecord:
    seq, reason, date, din, an16, an32 = row
    analogues = [
        Measurement(
            id=i,
            name=SCALE[i][0] if i in SCALE else f"analogue_{i}",
            value=raw * SCALE[i][1] if i in SCALE else raw,
            unit=SCALE[i][2] if i in SCALE else None,
            raw=raw,
        )
        for i, raw in an16.items()
    ] + [Measurement(id=i, name=f"analogue32_{i}", value=raw, raw=raw) for i, raw in an32.items()]
    return TelemetryRecord(
        record_id=f"r{seq}",
        protocol="dmt",
        session_id="s",
        ingestor="i",
        device=DeviceIdentity(
            imei="356692063643328",
            serial=131693,
            product_id=33,
            firmware="33.4.1.27",
            iccid="8944538523010771676",
        ),
        sequence=seq,
        device_time=_at(date),
        received_at=RECEIVED,
        log_reason=LogReason(code=reason),
        position=Position(
            latitude=43.7370138,
            longitude=-79.3462607,
            altitude_m=197.0,
            speed_m_s=0.0,
            heading_deg=66.0,
            accuracy_m=37.0,
            pdop=1.8,
            fix_time=_at("2017-05-08 18:04:57"),
            valid=True,
        ),
        inputs=din,
        outputs=0,
        status=2,
        analogues=analogues,
    )


def test_records_map_to_the_captured_oem_body() -> None:
    """The capture, field by field, except what record.v1 does not keep: SpdAcc, and the
    GPS status bits beyond "valid" (GpsStat 1)."""
    expected = traditional_vector()
    for record in expected["Records"]:
        gps = record["Fields"][0]
        assert gps["FType"] == 0
        del gps["SpdAcc"]
        gps["GpsStat"] = 1
    body = oem_body([capture_record(row) for row in CAPTURE])
    assert body == expected
    # Key order as the server writes it (some receivers read positionally).
    assert list(body) == ["SerNo", "IMEI", "ICCID", "ProdId", "FW", "Records"]
    assert list(body["Records"][0]["Fields"][0])[-1] == "FType"
    assert json.loads(oem_json([capture_record(CAPTURE[0])]))["Records"][0]["SeqNo"] == 125


def test_a_binary_capture_maps_with_the_oem_servers_units() -> None:
    """A device's binary records (Traccar's capture) -> record.v1 -> OEM JSON: degrees,
    Spd cm/s, Head in degrees (the wire has 2-degree steps), PDOP in tenths."""
    wire = decode_message_records(VECTOR_DATA)
    records = [
        telemetry_record(r, HELLO, session_id="s", ingestor="i", received_at=RECEIVED) for r in wire
    ]
    body = oem_body(records)
    assert {k: body[k] for k in ("SerNo", "IMEI", "ICCID", "ProdId", "FW")} == {
        "SerNo": 129336,
        "IMEI": "353323081669730",
        "ICCID": "89610185001824844630",
        "ProdId": 34,
        "FW": "1.9",
    }
    first = body["Records"][0]
    assert (first["SeqNo"], first["Reason"], first["DateUTC"]) == (565, 3, "2021-02-05 05:51:55")
    by_type = {f["FType"]: f for f in first["Fields"]}
    assert by_type[0] == {
        "GpsUTC": "2021-02-05 05:51:55",
        "Lat": 55.457414,
        "Long": 9.9343941,
        "Alt": 30,
        "Spd": 2330,
        "Head": 296,
        "PDOP": 12,
        "PosAcc": 7,
        "GpsStat": 1,
        "FType": 0,
    }
    assert by_type[2] == {"DIn": 3, "DOut": 0, "DevStat": 3, "FType": 2}
    assert by_type[6]["AnalogueData"]["1"] == 4125
    assert by_type[6]["AnalogueData"]["3"] == 2112
    # Every value of the wire's analogue field is there, as sent.
    first_wire = wire[0]
    assert isinstance(first_wire, Record)
    (an16,) = [f for f in first_wire.fields if isinstance(f, Analogue16Field)]
    assert by_type[6]["AnalogueData"] == {str(v.id): v.raw for v in an16.values}
    assert [r["SeqNo"] for r in body["Records"]] == [565, 566]


def _plain(**changes: Any) -> TelemetryRecord:
    return capture_record(CAPTURE[0]).model_copy(update=changes)


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        # No position, no digital state: no field 0 or 2.
        ({"position": None, "inputs": None, "outputs": None, "status": None}, [6, 7]),
        # An invalid fix says so; a trip type and the counters get their own fields.
        (
            {
                "trip_type": 2,
                "trip_trim": 5,
                "counters": [
                    Measurement(id=26, name="trip_distance", value=1200, unit="m", raw=1200),
                    Measurement(id=26, name="trip_duration", value=300, unit="s", raw=300),
                    Measurement(id=27, name="odometer", value=98765, raw=98765),
                    Measurement(id=27, name="run_hours", value=3600, unit="s", raw=3600),
                ],
            },
            [0, 2, 6, 7, 15, 26, 27],
        ),
    ],
)
def test_fields_appear_only_for_what_the_record_has(
    changes: dict[str, Any], fields: list[int]
) -> None:
    record = oem_body([_plain(**changes)])["Records"][0]
    assert [f["FType"] for f in record["Fields"]] == fields
    by_type = {f["FType"]: f for f in record["Fields"]}
    if 26 in by_type:
        assert by_type[15] == {"TT": 2, "Trim": 5, "FType": 15}
        assert by_type[26] == {"Dist": 1200, "Dur": 300, "FType": 26}
        assert by_type[27] == {"Odo": 98765, "RH": 3600, "FType": 27}


def test_an_invalid_fix_and_a_clock_not_set() -> None:
    position = _plain().position
    assert position is not None
    record = _plain(
        position=position.model_copy(update={"valid": False, "fix_time": None}),
        device_time=None,
    )
    (entry,) = oem_body([record])["Records"]
    assert entry["DateUTC"] == "2026-11-30 12:00:00"  # when fleetgate received it
    gps = entry["Fields"][0]
    assert gps["GpsStat"] == 0 and "GpsUTC" not in gps  # no time of the fix is known


def test_a_body_is_of_one_device() -> None:
    other = _plain(device=DeviceIdentity(imei="1"))
    with pytest.raises(ValueError, match="several devices"):
        oem_body([_plain(), other])
    with pytest.raises(ValueError, match="no records"):
        oem_body([])


# --- render, filters, dynamic fields ---------------------------------------------------------


def _endpoint(**extra: Any) -> Any:
    return config_of({"name": "e", "url": "http://127.0.0.1:9/hook"} | extra).endpoints[0]


def test_render_in_each_format() -> None:
    record = capture_record(CAPTURE[0])
    presigner = Presigner(ConnectorSettings())
    fleetgate, oem = _endpoint(), _endpoint(format="oem")
    assert json.loads(render(fleetgate, record, presigner))["data"]["sequence"] == 125
    assert json.loads(render(oem, record, presigner))["Records"][0]["SeqNo"] == 125
    batch = RecordBatch.of([capture_record(r) for r in CAPTURE[:2]], ["a", "b"])
    assert [r["SeqNo"] for r in json.loads(render(oem, batch, presigner))["Records"]] == [125, 128]
    with pytest.raises(ValueError, match="records only"):
        render(oem, stored(1), presigner)
    # An OEM endpoint reads records only, and takes no file event.
    assert source_topics(oem) == [str(Topic.RECORDS)]
    assert not accepts(oem, stored(1)) and accepts(oem, record) and accepts(oem, batch)
    assert accepts(fleetgate, stored(1))


def test_a_batch_round_trips_through_a_retry_record() -> None:
    records = [capture_record(r) for r in CAPTURE]
    batch = RecordBatch.of(records, [f"t/0/{i}" for i in range(5)])
    again = decode_event(encode(batch))
    assert again == batch and isinstance(again, RecordBatch)
    assert again.event_id == batch_id(records) and again.imei == "356692063643328"
    # The id is the records': the same on every attempt, another for other records.
    assert batch_id(records) == batch_id(list(records)) != batch_id(records[:4])


def test_dynamic_fields_in_the_url_and_headers() -> None:
    endpoint = _endpoint(
        url="http://127.0.0.1:9/dm/[IMEI]/[SERIAL]?iccid=[ICCID]",
        headers={"X-Device": "[IMEI]-[SERIAL]", "X-Sim": "[ICCID]", "X-Static": "s"},
    )
    client = EndpointClient(endpoint)
    fields = dynamic_fields(capture_record(CAPTURE[0]))
    assert fields == {
        "[IMEI]": "356692063643328",
        "[SERIAL]": "131693",
        "[ICCID]": "8944538523010771676",
    }
    assert (
        client.url(fields)
        == "http://127.0.0.1:9/dm/356692063643328/131693?iccid=8944538523010771676"
    )
    headers = client.headers("id", "356692063643328", fields=fields)
    assert headers["X-Device"] == "356692063643328-131693"
    assert headers["X-Sim"] == "8944538523010771676"
    # A camera's file event knows only its IMEI: the others are empty.
    assert dynamic_fields(stored(1)) == {"[IMEI]": "356307042441013", "[SERIAL]": "", "[ICCID]": ""}
    # Values are percent-encoded in the URL.
    assert client.url({"[IMEI]": "a/b", "[SERIAL]": "", "[ICCID]": ""}).startswith(
        "http://127.0.0.1:9/dm/a%2Fb/?"
    )
    assert httpx.URL(client.url(fields)).params["iccid"] == "8944538523010771676"


# --- config ---------------------------------------------------------------------------------


def test_format_and_batch_settings() -> None:
    default = _endpoint()
    assert default.format == "fleetgate" and default.batch is None
    oem = _endpoint(format="oem", batch={"max_records": 10, "max_wait_seconds": "2s"})
    assert oem.batch is not None
    assert (oem.batch.max_records, oem.batch.max_wait_seconds) == (10, 2.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"format": "xml"}, "format (endpoint 'e'): Input should be 'fleetgate', 'oem' or 'dmt'"),
        ({"format": "dmt"}, "'format: dmt' forwards over raw TCP: the url must be tcp://host:port"),
        ({"format": "oem", "filter": {"types": ["record", "file.stored"]}},
         "format 'oem' carries telemetry records only; remove ['file.stored'] from filter.types"),
        ({"batch": {"max_records": 5, "max_wait_seconds": 1}}, "'batch' needs 'format: oem'"),
        ({"format": "oem", "batch": {"max_records": 0, "max_wait_seconds": 1}},
         "batch.max_records (endpoint 'e'): Input should be greater than or equal to 1"),
        ({"format": "oem", "batch": {"max_records": 5, "max_wait_seconds": "10m"}},
         "batch.max_wait_seconds (endpoint 'e'): at most 300 s"),
        ({"format": "oem", "batch": {"max_records": 5}},
         "batch.max_wait_seconds (endpoint 'e'): Field required"),
        ({"format": "oem", "batch": {"max_records": 5, "max_wait_seconds": 1, "max_bytes": 9}},
         "batch.max_bytes (endpoint 'e'): Extra inputs are not permitted"),
        ({"url": "http://10.0.0.1/[IMEI]", "allow_private_network": False},
         "10.0.0.1 is a private address"),
    ],
)  # fmt: skip
def test_bad_endpoint_settings_are_named(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _endpoint(**extra)
    assert message in str(caught.value)


def test_a_placeholder_in_the_url_is_a_valid_url() -> None:
    endpoint = _endpoint(url="https://hooks.example.com/dm/[IMEI]?sn=[SERIAL]&sim=[ICCID]")
    assert endpoint.url.endswith("[IMEI]?sn=[SERIAL]&sim=[ICCID]")


# --- the batcher ----------------------------------------------------------------------------


def _r(imei: str, seq: int) -> TelemetryRecord:
    return _plain(device=DeviceIdentity(imei=imei), sequence=seq, record_id=f"{imei}-{seq}")


def test_batcher_closes_full_batches_and_late_ones() -> None:
    b = Batcher(max_records=3, max_wait=5.0)
    assert b.add(10, _r("A", 1), None, now=0.0) is None
    assert b.add(11, _r("B", 1), None, now=1.0) is None
    assert b.add(12, _r("A", 2), None, now=2.0) is None
    assert b.low_water() == 10 and b.next_deadline() == 5.0
    full = b.add(13, _r("A", 3), "t/0/13", now=3.0)
    assert full is not None and full.offsets == [10, 12, 13]
    assert [r.sequence for r in full.records] == [1, 2, 3]
    assert full.batch().sources == [None, None, "t/0/13"]
    # A's batch left: B holds the offsets back now.
    assert b.low_water() == 11 and len(b) == 1
    assert b.due(now=5.9) == []
    (late,) = b.due(now=6.0)
    assert late.imei == "B" and late.offsets == [11]
    assert b.low_water() is None and b.next_deadline() is None and len(b) == 0


def test_batcher_returns_due_batches_oldest_first() -> None:
    b = Batcher(max_records=10, max_wait=1.0)
    b.add(5, _r("B", 1), None, now=0.5)
    b.add(3, _r("A", 1), None, now=0.0)
    assert [x.imei for x in b.due(now=2.0)] == ["A", "B"]


def test_a_batch_of_one_is_sent_at_once() -> None:
    b = Batcher(max_records=1, max_wait=60.0)
    full = b.add(0, _r("A", 1), None, now=0.0)
    assert full is not None and len(b) == 0


def test_the_readme_examples_are_one_record_in_both_formats() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## OEM-format output and batching\n", 1)[1].split("\n## ", 1)[0]
    fleetgate, oem = re.findall(r"```json\n(.*?)```", section, re.DOTALL)
    record = RecordWebhook.model_validate_json(fleetgate).data
    assert json.loads(oem) == oem_body([record])
