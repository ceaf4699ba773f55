"""OEM Server JSON in, OEM Server JSON out, end to end: bodies of both formats POSTed over real
HTTP to the intake -> a real Kafka broker -> the connector, batching -> a real HTTP receiver
gets the same values, field by field.

The captures of ``../shared/vectors/dmt_http_json.txt`` (one traditional body of 5 records, one
Edge body) and two bodies made here that carry every field ``record.v1`` keeps (trip type, trip
and odometer counters, 32-bit analogues, a field fleetgate does not decode; an Edge position,
I/O and analogues). A field fleetgate does not decode comes back as posted; fields come back
in ``FType`` order. The known differences, each asserted below:

- ``SpdAcc`` is not kept by ``record.v1``: not given back;
- ``GpsStat`` comes back 1 for a valid fix (any status not 0), else 0: ``record.v1`` keeps
  only "valid";
- a negative 16-bit analogue comes back as its u16 (the binary wire's form, e.g. -500 ->
  65036): ``record.v1``'s ``raw`` is the wire value; which form the OEM Server writes is not
  public;
- a ``DateUTC`` of 2013-01-01 00:00:00 (the device's clock not set) comes back as the time
  fleetgate received the record (``record.v1`` has no device time then), and a ``GpsUTC`` of
  it with it is left out (no time of the fix is known);
- an Edge body comes back in the traditional format (``format: oem`` is that format): ``sn``
  as the number ``SerNo``, ``date`` to the second, counters 0 and 1 as analogues 1 and 6 of
  FType 6 (the binary protocol's battery voltage and level), ``analogues`` in FType 6 by id,
  a position as FType 0 (``posInfo.PDOP`` in tenths), I/O as FType 2; ``rev``, the rest of
  ``posInfo`` and the other counters have no traditional field and are left out (the
  counters reach a fleetgate-format endpoint, asserted here).
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from connector.oem import oem_body
from contracts.dmt_oem import oem_telemetry_records
from contracts.records import RecordSource, RecordWebhook
from dmtproto.oem_json import decode_oem_json
from tests.conftest import S3
from tests.connector.connector_helpers import (
    Received,
    config_of,
    receivers,
    settings_for,
    wait_for,
)
from tests.connector.connector_helpers import running as connector_running
from tests.ingestor_oem.oem_helpers import EDGE, TRADITIONAL
from tests.ingestor_oem.oem_helpers import running as intake_running

OEM_TIME = "%Y-%m-%d %H:%M:%S"
CLOCK_NOT_SET = "2013-01-01 00:00:00"
MAX_RECORDS = 5

#: A traditional body with every field fleetgate decodes, an undecoded one (FType 40: no
#: meaning here, given back as posted), a negative temperature and a clock not set.
FULL: dict[str, Any] = {
    "SerNo": 812345, "IMEI": "356692063640001", "ICCID": "8944538523010770001",
    "ProdId": 77, "FW": "77.2.1.5",
    "Records": [
        {"SeqNo": 4001, "Reason": 1, "DateUTC": "2026-04-24 02:40:00", "Fields": [
            {"GpsUTC": "2026-04-24 02:39:58", "Lat": -33.8688197, "Long": 151.2092955,
             "Alt": -12, "Spd": 1250, "SpdAcc": 5, "Head": 271, "PDOP": 9, "PosAcc": 4,
             "GpsStat": 3, "FType": 0},
            {"DIn": 1, "DOut": 2, "DevStat": 128, "FType": 2},
            {"AnalogueData": {"1": 4018, "2": 1183, "3": 2940, "4": 22, "6": 8750, "20": 77},
             "FType": 6},
            {"AnalogueData": {"11": -5, "12": 70000}, "FType": 7},
            {"TT": 2, "Trim": 5, "FType": 15},
            {"Dist": 1200, "Dur": 300, "FType": 26},
            {"Odo": 98765, "RH": 3600, "FType": 27},
            {"Data": "0a0b", "Count": 7, "FType": 40},
        ]},
        {"SeqNo": 4002, "Reason": 11, "DateUTC": "2026-04-24 02:45:00", "Fields": [
            {"GpsUTC": "2026-04-24 02:44:59", "Lat": -33.8688, "Long": 151.2093, "Alt": 3,
             "Spd": 0, "SpdAcc": 0, "Head": 0, "PDOP": 25, "PosAcc": 60, "GpsStat": 0,
             "FType": 0},
            {"AnalogueData": {"1": 4011, "3": -500}, "FType": 6},
        ]},
        {"SeqNo": 4003, "Reason": 2, "DateUTC": CLOCK_NOT_SET, "Fields": [
            {"GpsUTC": CLOCK_NOT_SET, "Lat": 1.5, "Long": 2.5, "Alt": 0, "Spd": 0, "Head": 0,
             "PDOP": 99, "PosAcc": 500, "GpsStat": 0, "FType": 0},
            {"DIn": 0, "DOut": 0, "DevStat": 0, "FType": 2},
        ]},
    ],
}  # fmt: skip

#: The Edge capture's device, a record with what that capture lacks: a position, I/O,
#: analogues (one a float), the battery counters and one other counter.
EDGE_FULL: dict[str, Any] = {
    "date": "2021-12-12T16:09:52.250000123Z",
    "device": {"sn": "416581", "prod": 85, "rev": 1, "fw": "1.12",
               "iccid": "89011702278612797427", "imei": "351358810439486"},
    "sqn": 1550, "reason": 11,
    "lat": -33.8688197, "lng": 151.2092955, "posAcc": 12,
    "posInfo": {"GDOP": 2.1, "HDOP": 0.9, "PDOP": 1.4, "BSat": 3, "GSat": 9, "Src": "gnss"},
    "analogues": [{"id": 20, "val": 17}, {"id": 21, "val": 12.5}],
    "inputs": 1, "outputs": 0, "status": 4,
    "counters": [{"id": 0, "val": 5290}, {"id": 1, "val": 9120}, {"id": 3, "val": 3210}],
}  # fmt: skip

#: Edge counters by id -> the binary protocol's analogue (FType 6) with the same value.
EDGE_BATTERY = {0: "1", 1: "6"}


def _traditional_back(body: dict[str, Any]) -> dict[str, Any]:
    """What an OEM-format endpoint gets for a traditional ``body``: the same, but for the
    known differences of the module docstring (the clock-not-set record is left as posted
    here; the test checks its time against when it was posted)."""
    back = copy.deepcopy(body)
    for record in back["Records"]:
        record["Fields"].sort(key=lambda field: field["FType"])
        for field in record["Fields"]:
            if field["FType"] == 0:
                field.pop("SpdAcc", None)  # not in record.v1
                field["GpsStat"] = 1 if field["GpsStat"] else 0  # only "valid" is kept
            if field["FType"] == 6:  # u16, as the binary wire
                field["AnalogueData"] = {k: v & 0xFFFF for k, v in field["AnalogueData"].items()}
    return back


def _edge_time(text: str) -> str:
    """``date`` (ISO 8601, maybe with nanoseconds) as ``DateUTC``: to the second."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")[:19]).strftime(OEM_TIME)


def _edge_back(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """What an OEM-format endpoint gets for Edge ``bodies`` of one device: the traditional
    format, as the module docstring says."""
    device = bodies[0]["device"]
    records = []
    for body in bodies:
        when = _edge_time(body["date"])
        fields: list[dict[str, Any]] = []
        if "lat" in body:
            fields.append(
                {"GpsUTC": when, "Lat": body["lat"], "Long": body["lng"],
                 "PDOP": round(body["posInfo"]["PDOP"] * 10), "PosAcc": body["posAcc"],
                 "GpsStat": 1, "FType": 0}
            )  # fmt: skip
        if "inputs" in body:
            fields.append(
                {"DIn": body["inputs"], "DOut": body["outputs"], "DevStat": body["status"],
                 "FType": 2}
            )  # fmt: skip
        analogues = {EDGE_BATTERY[c["id"]]: c["val"] for c in body["counters"] if c["id"] in (0, 1)}
        analogues |= {str(a["id"]): a["val"] for a in body.get("analogues", [])}
        if analogues:
            fields.append({"AnalogueData": analogues, "FType": 6})
        records.append(
            {"SeqNo": body["sqn"], "Reason": body["reason"], "DateUTC": when, "Fields": fields}
        )
    return {
        "SerNo": int(device["sn"]), "IMEI": device["imei"], "ICCID": device["iccid"],
        "ProdId": device["prod"], "FW": device["fw"], "Records": records,
    }  # fmt: skip


def _by_device(posts: list[Received]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for post in posts:
        body: dict[str, Any] = post.json()
        grouped[body["IMEI"]].append(body)
    return grouped


def _merged(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The POSTs of one device as one body: the same identity in each, the records in order."""
    identities = [{k: v for k, v in body.items() if k != "Records"} for body in bodies]
    assert all(identity == identities[0] for identity in identities), identities
    return identities[0] | {"Records": [r for body in bodies for r in body["Records"]]}


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    """Every leaf by its path (``Records[SeqNo=125].FType0.Lat``), for a field-by-field
    comparison whose failure names the field."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flat(item, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, list) and path.endswith("Records"):
        return {k: v for r in value for k, v in _flat(r, f"{path}[SeqNo={r['SeqNo']}]").items()}
    if isinstance(value, list) and path.endswith("Fields"):
        return {k: v for f in value for k, v in _flat(f, f"{path}.FType{f['FType']}").items()}
    return {path: value}


async def test_oem_bodies_of_both_formats_come_back_with_the_same_values(
    kafka: str, s3: S3
) -> None:
    traditional = json.loads(TRADITIONAL)
    edge = json.loads(EDGE)
    posted_at = datetime.now(UTC).replace(microsecond=0)
    async with intake_running(kafka) as intake, httpx.AsyncClient() as client:
        for body in (TRADITIONAL, EDGE, json.dumps(FULL).encode(), json.dumps(EDGE_FULL).encode()):
            response = await client.post(intake.url, content=body)
            assert response.status_code == 200, response.text
    answered_at = datetime.now(UTC)
    total = len(traditional["Records"]) + 1 + len(FULL["Records"]) + 1
    with receivers() as receiver:
        oem, plain = receiver(), receiver()
        config = config_of(
            {
                "name": "oem",
                "url": oem.url,
                "format": "oem",
                "batch": {"max_records": MAX_RECORDS, "max_wait_seconds": 1},
            },
            {"name": "plain", "url": plain.url, "filter": {"types": ["record"]}},
        )
        async with connector_running(settings_for(kafka, s3), config):
            await wait_for(
                lambda: (
                    sum(len(p.json()["Records"]) for p in oem.delivered()) >= total
                    and len(plain.delivered()) >= total
                ),
                f"{total} records at both endpoints",
            )
        oem_posts, plain_posts = oem.delivered(), plain.delivered()

    grouped = _by_device(oem_posts)
    assert sorted(grouped) == sorted(
        [traditional["IMEI"], FULL["IMEI"], EDGE_FULL["device"]["imei"]]
    )
    # Batched: the capture's 5 records of one device in one POST, as the OEM Server posted them.
    assert [len(b["Records"]) for b in grouped[traditional["IMEI"]]] == [MAX_RECORDS]
    assert all(len(p.json()["Records"]) <= MAX_RECORDS for p in oem_posts)
    assert sum(len(p.json()["Records"]) for p in oem_posts) == total  # each record once

    # The traditional capture: the same body, but for SpdAcc and GpsStat.
    back = _merged(grouped[traditional["IMEI"]])
    assert _flat(back) == _flat(_traditional_back(traditional))
    assert [r["SeqNo"] for r in back["Records"]] == [125, 128, 130, 131, 133]
    gps = back["Records"][0]["Fields"][0]
    assert (gps["Spd"], gps["PDOP"], gps["Head"], gps["GpsStat"]) == (0, 18, 66, 1)
    assert "SpdAcc" not in gps and traditional["Records"][0]["Fields"][0]["GpsStat"] == 7

    # Every kept field of the made-up body, and its known differences.
    back = _merged(grouped[FULL["IMEI"]])
    unset = back["Records"][2]
    assert unset["SeqNo"] == 4003 and unset["DateUTC"] != CLOCK_NOT_SET
    received = datetime.strptime(unset["DateUTC"], OEM_TIME).replace(tzinfo=UTC)
    assert posted_at - timedelta(seconds=1) <= received <= answered_at  # when fleetgate got it
    assert "GpsUTC" not in unset["Fields"][0]
    expected = _traditional_back(FULL)
    expected["Records"][2]["DateUTC"] = unset["DateUTC"]
    del expected["Records"][2]["Fields"][0]["GpsUTC"]
    assert _flat(back) == _flat(expected)
    first = {f["FType"]: f for f in back["Records"][0]["Fields"]}
    assert first[0]["Spd"] == 1250 and first[0]["GpsStat"] == 1 and first[0]["Alt"] == -12
    assert first[7]["AnalogueData"] == {"11": -5, "12": 70000}
    assert first[40] == {"Data": "0a0b", "Count": 7, "FType": 40}  # as posted, undecoded
    assert [f["FType"] for f in back["Records"][0]["Fields"]] == [0, 2, 6, 7, 15, 26, 27, 40]
    assert back["Records"][1]["Fields"][1]["AnalogueData"] == {"1": 4011, "3": 65036}

    # The Edge bodies: traditional, battery counters as analogues 1 and 6.
    back = _merged(grouped[edge["device"]["imei"]])
    assert _flat(back) == _flat(_edge_back([edge, EDGE_FULL]))
    assert back["Records"][0]["Fields"] == [{"AnalogueData": {"1": 5304}, "FType": 6}]
    assert back["Records"][1]["DateUTC"] == "2021-12-12 16:09:52"
    assert back["Records"][1]["Fields"][0]["PDOP"] == 14

    # The same records at the fleetgate-format endpoint, with what OEM JSON cannot carry:
    # the Edge counters other than 0 and 1, as sent.
    hooks = [RecordWebhook.model_validate_json(p.body).data for p in plain_posts]
    assert sorted((r.imei, r.sequence) for r in hooks) == sorted(
        (b["IMEI"], r["SeqNo"]) for bodies in grouped.values() for b in bodies for r in b["Records"]
    )
    sources = {r.sequence: r.source for r in hooks}
    assert sources[125] is RecordSource.OEM_HTTP and sources[1549] is RecordSource.OEM_HTTP_EDGE
    counters = {r.sequence: {m.name: m.raw for m in r.counters} for r in hooks}
    edge_counters = {c["id"]: c["val"] for c in edge["counters"] if c["id"] not in (0, 1)}
    assert counters[1549] == {f"counter_{i}": v for i, v in edge_counters.items()}
    assert counters[1550] == {"counter_3": 3210}


def test_undecoded_fields_come_back_only_from_oem_bodies() -> None:
    """Pure: the same undecoded field is given back for a record of an OEM body (its
    ``data_hex`` is the field's JSON text), never for a binary device's (whose bytes have no
    OEM JSON form), nor when its text is not such a field."""
    (record,) = oem_telemetry_records(
        decode_oem_json(json.dumps({"IMEI": "1", "Records": [FULL["Records"][0]]})),
        session_id="s",
        ingestor="i",
        received_at=datetime(2026, 11, 30, tzinfo=UTC),
    )
    (unknown,) = record.unknown_fields
    assert unknown.id == 40
    posted = oem_body([record])["Records"][0]["Fields"]
    assert posted[-1] == {"Count": 7, "Data": "0a0b", "FType": 40}
    binary = record.model_copy(update={"source": RecordSource.TCP})
    assert [f["FType"] for f in oem_body([binary])["Records"][0]["Fields"]] == [
        0, 2, 6, 7, 15, 26, 27
    ]  # fmt: skip
    for data_hex in ("zz", b"\xff".hex(), b'{"FType": 41}'.hex(), b"[40]".hex()):
        odd = unknown.model_copy(update={"data_hex": data_hex})
        other = record.model_copy(update={"unknown_fields": [odd]})
        assert 40 not in [f["FType"] for f in oem_body([other])["Records"][0]["Fields"]]
