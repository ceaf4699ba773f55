"""The OEM Server's JSON bodies (``dmtproto.oem_json``): the captures in
tests/dmtproto/vectors/dmt_http_json.txt (copied from ../shared/vectors) decoded to the values
their notes list, tables of good and bad bodies, and Hypothesis: any JSON either decodes or
raises an :class:`OemJsonError` naming a field."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmtproto import RemoteProtocolError
from dmtproto.oem_json import (
    EdgeValue,
    OemBody,
    OemFormat,
    OemJsonError,
    OemUnknownField,
    decode_oem_json,
)

VECTORS = Path(__file__).parent / "vectors" / "dmt_http_json.txt"
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bodies() -> list[str]:
    return [line for line in VECTORS.read_text().splitlines() if line.startswith("{")]


EDGE, TRADITIONAL = bodies()


def test_vectors_are_the_shared_captures() -> None:
    root = Path(__file__).resolve().parents[2]
    candidates = [up / "shared" / "vectors" / "dmt_http_json.txt" for up in root.parents[:2]]
    shared = next((path for path in candidates if path.exists()), None)
    if shared is None:
        pytest.skip("no ../shared research notes next to this clone (the copy is tested)")
    assert VECTORS.read_text() == shared.read_text()


def test_edge_vector() -> None:
    body = decode_oem_json(EDGE.encode())
    assert body.format is OemFormat.EDGE
    device = body.device
    assert device.imei == "351358810439486" and device.serial == 416581
    assert device.product_id == 85 and device.hardware_revision == 1 and device.firmware == "1.12"
    assert device.iccid == "89011702278612797427"
    (record,) = body.records
    assert record.sequence == 1549 and record.log_reason == 42
    assert record.log_reason_name == "device_counters"
    assert record.device_time == datetime(2021, 12, 12, 16, 4, 52, tzinfo=UTC)
    assert record.position is None and record.digital is None
    # counter 0 is the battery in mV: the binary protocol's analogue 1 (5304 -> 5.304 V)
    (battery,) = record.analogues
    assert battery.id == 1 and battery.raw == 5304 and battery.value == 5.304
    # every other counter the notes list, as sent
    notes = {3: 3200, 4: 5066, 128: 1, 129: 8, 130: 0, 131: 0, 132: 0, 134: 1, 138: 0,
             139: 36, 142: 1629023, 145: 0, 146: 1}  # fmt: skip
    assert record.edge_counters == tuple(EdgeValue(i, v) for i, v in notes.items())


_NOTE = re.compile(
    r"# SeqNo=(\d+) Reason=(\d+) DateUTC=(\S+ \S+) \| GPS fix=(\S+ \S+) "
    r"lat=(\S+) lon=(\S+) alt=(\d+) spd=(\d+)cm/s course=(\d+) acc=(\d+) "
    r"valid=(\w+) \| DIn=(\d+) ign=(\w+) DOut=(\d+) DevStat=(\d+) \| F6: "
    r"battery=(\S+), deviceTemp=(\S+), rssi=(\d+), solarPower=(\S+) "
)


def _notes() -> list[dict[str, Any]]:
    """The traditional vector's per-record notes: ``# SeqNo=125 Reason=11 DateUTC=...``."""
    out = []
    for line in VECTORS.read_text().splitlines():
        match = _NOTE.match(line)
        if match:
            g = match.groups()
            out.append({
                "seq": int(g[0]), "reason": int(g[1]), "date": g[2], "fix": g[3],
                "lat": float(g[4]), "lon": float(g[5]), "alt": int(g[6]), "spd": int(g[7]),
                "course": int(g[8]), "acc": int(g[9]), "valid": g[10] == "True",
                "din": int(g[11]), "ign": g[12] == "True", "dout": int(g[13]),
                "devstat": int(g[14]), "battery": float(g[15]), "temp": float(g[16]),
                "rssi": int(g[17]), "solar": float(g[18]),
            })  # fmt: skip
    return out


def test_traditional_vector_has_the_values_of_its_notes() -> None:
    body = decode_oem_json(TRADITIONAL.encode())
    assert body.format is OemFormat.TRADITIONAL
    device = body.device
    assert (device.imei, device.serial, device.product_id, device.firmware) == (
        "356692063643328", 131693, 33, "33.4.1.27"
    )  # fmt: skip
    assert device.iccid == "8944538523010771676" and device.hardware_revision is None
    notes = _notes()
    assert len(notes) == len(body.records) == 5
    for note, record in zip(notes, body.records, strict=True):
        assert record.sequence == note["seq"] and record.log_reason == note["reason"]
        assert record.device_time == datetime.fromisoformat(note["date"]).replace(tzinfo=UTC)
        position = record.position
        assert position is not None
        assert position.fix_time == datetime.fromisoformat(note["fix"]).replace(tzinfo=UTC)
        assert (position.latitude, position.longitude) == (note["lat"], note["lon"])
        assert position.altitude_m == note["alt"] and position.heading_deg == note["course"]
        assert position.speed_m_s == note["spd"] / 100 and position.accuracy_m == note["acc"]
        assert position.valid is note["valid"] and position.pdop == 1.8  # PDOP 18: tenths
        digital = record.digital
        assert digital is not None
        assert (digital.inputs, digital.outputs, digital.status) == (
            note["din"], note["dout"], note["devstat"]
        )  # fmt: skip
        assert digital.ignition is note["ign"]
        values = {a.id: a.value for a in record.analogues}
        assert values == {1: note["battery"], 3: note["temp"], 4: note["rssi"], 5: note["solar"]}
        assert {a.id for a in record.analogues32} == {11, 12, 13, 14, 15}


def _traditional(**record: Any) -> bytes:
    base: dict[str, Any] = {"SeqNo": 7, "Reason": 1, "DateUTC": "2024-02-03 04:05:06", "Fields": []}
    return json.dumps({"SerNo": 1, "IMEI": "352093081234567", "Records": [base | record]}).encode()


def _fields(*fields: dict[str, Any]) -> bytes:
    return _traditional(Fields=list(fields))


# --- good bodies: what each field becomes ---------------------------------------------------


def test_each_traditional_field_type() -> None:
    body = decode_oem_json(_fields(
        {"FType": 15, "TT": 2, "Trim": 5},
        {"FType": 26, "Dist": 1200, "Dur": 300},
        {"FType": 27, "Odo": 123456, "RH": 3600},
        {"FType": 6, "AnalogueData": {"3": -500, "2": 1183}},
        {"FType": 7, "AnalogueData": {"20": -7}},
        {"FType": 99, "Whatever": [1, 2]},
    ))  # fmt: skip
    (record,) = body.records
    assert record.trip_type is not None and (record.trip_type.trip_type, record.trip_type.trim) == (
        2,
        5,
    )
    assert record.trip is not None and (record.trip.distance_m, record.trip.duration_s) == (
        1200,
        300,
    )
    assert record.odometer is not None and record.odometer.odometer == 123456
    assert record.odometer.run_hours_s == 3600
    # a negative temperature is the wire's two's complement, and scales the same
    temperature, supply = sorted(record.analogues, key=lambda a: a.id, reverse=True)
    assert temperature.raw == 65036 and temperature.value == -5.0
    assert supply.value == 11.83
    assert record.analogues32[0].value == -7
    assert record.unknown == (OemUnknownField(99, '{"FType":99,"Whatever":[1,2]}'),)


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("2024-02-03 04:05:06", datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)),
        ("2024-02-03T04:05:06Z", datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)),
        ("2024-02-03T06:05:06+02:00", datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)),
        ("2024-02-03T04:05:06.123456789Z", datetime(2024, 2, 3, 4, 5, 6, 123456, tzinfo=UTC)),
        ("2013-01-01 00:00:00", None),  # the binary protocol's time 0: clock not set
    ],
)
def test_dates(date: str, expected: datetime | None) -> None:
    assert decode_oem_json(_traditional(DateUTC=date)).records[0].device_time == expected


def test_edge_position_and_digital() -> None:
    body = {"date": "2024-01-01T00:00:00.5Z", "sqn": 3, "reason": 11,
            "device": {"imei": "351358810439486", "sn": 77},
            "lat": -33.8, "lng": 151.2, "posAcc": 12.5, "posInfo": {"PDOP": 1.4},
            "inputs": 1, "status": 4, "analogues": [{"id": 2, "val": 1.5}],
            "counters": [{"id": 1, "val": 8750}], "lora": {"dev_id": "x"}}  # fmt: skip
    decoded = decode_oem_json(json.dumps(body))
    (record,) = decoded.records
    assert decoded.device.serial == 77 and decoded.device.iccid is None
    position = record.position
    assert position is not None and position.valid and position.pdop == 1.4
    assert (position.latitude, position.longitude, position.accuracy_m) == (-33.8, 151.2, 12.5)
    assert position.fix_time == record.device_time
    assert record.digital is not None and record.digital.ignition and record.digital.outputs == 0
    assert record.edge_analogues == (EdgeValue(2, 1.5),)
    (level,) = record.analogues  # counter 1: battery level, the binary analogue 6
    assert level.id == 6 and level.value == 87.5


def test_an_empty_records_list_is_a_body_with_no_records() -> None:
    body = decode_oem_json(b'{"IMEI": "1234", "Records": []}')
    assert isinstance(body, OemBody) and body.records == ()


# --- bad bodies: the error names the field --------------------------------------------------


BAD: list[tuple[str, bytes, str]] = [
    ("not JSON", b'{"IMEI": ', "$"),
    ("not UTF-8", b'{"IMEI": "\xff"}', "$"),
    ("NaN", b'{"IMEI": "1", "Records": [{"SeqNo": NaN}]}', "$"),
    ("infinite", b'{"IMEI": "1", "Records": [], "SerNo": 1e999}', "$"),
    ("an array", b"[1, 2]", "$"),
    ("no IMEI", b'{"Records": []}', "IMEI"),
    ("IMEI a number", b'{"IMEI": 352093081234567, "Records": []}', "IMEI"),
    ("IMEI letters", b'{"IMEI": "35209308123456x", "Records": []}', "IMEI"),
    ("no Records", b'{"IMEI": "1"}', "Records"),
    ("Records an object", b'{"IMEI": "1", "Records": {}}', "Records"),
    ("SerNo a string", b'{"IMEI": "1", "SerNo": "12", "Records": []}', "SerNo"),
    ("record not an object", b'{"IMEI": "1", "Records": [3]}', "Records[0]"),
    ("SeqNo missing", _traditional(SeqNo=None), "Records[0].SeqNo"),
    ("SeqNo a string", _traditional(SeqNo="7"), "Records[0].SeqNo"),
    ("SeqNo negative", _traditional(SeqNo=-1), "Records[0].SeqNo"),
    ("SeqNo too big", _traditional(SeqNo=2**32), "Records[0].SeqNo"),
    ("SeqNo a boolean", _traditional(SeqNo=True), "Records[0].SeqNo"),
    ("SeqNo fractional", _traditional(SeqNo=1.5), "Records[0].SeqNo"),
    ("Reason 256", _traditional(Reason=256), "Records[0].Reason"),
    ("DateUTC garbage", _traditional(DateUTC="yesterday"), "Records[0].DateUTC"),
    ("DateUTC a number", _traditional(DateUTC=1700000000), "Records[0].DateUTC"),
    ("Fields an object", _traditional(Fields={}), "Records[0].Fields"),
    ("FType missing", _fields({"Lat": 1}), "Records[0].Fields[0].FType"),
    ("Lat missing", _fields({"FType": 0, "Long": 1}), "Records[0].Fields[0].Lat"),
    ("Lat a string", _fields({"FType": 0, "Lat": "1", "Long": 1}), "Records[0].Fields[0].Lat"),
    ("Lat 91", _fields({"FType": 0, "Lat": 91, "Long": 1}), "Records[0].Fields[0].Lat"),
    ("Head 400", _fields({"FType": 0, "Lat": 1, "Long": 1, "Head": 400}),
     "Records[0].Fields[0].Head"),
    ("GpsUTC bad", _fields({"FType": 0, "Lat": 1, "Long": 1, "GpsUTC": "x"}),
     "Records[0].Fields[0].GpsUTC"),
    ("DIn a list", _fields({"FType": 2, "DIn": [1]}), "Records[0].Fields[0].DIn"),
    ("AnalogueData a list", _fields({"FType": 6, "AnalogueData": [1]}),
     "Records[0].Fields[0].AnalogueData"),
    ("analogue id not a number", _fields({"FType": 6, "AnalogueData": {"x": 1}}),
     "Records[0].Fields[0].AnalogueData"),
    ("analogue out of range", _fields({"FType": 6, "AnalogueData": {"1": 70000}}),
     "Records[0].Fields[0].AnalogueData.1"),
    ("Odo missing", _fields({"FType": 27, "RH": 1}), "Records[0].Fields[0].Odo"),
    ("device not an object", b'{"device": 1}', "device"),
    ("edge imei missing", b'{"device": {}, "date": "2024-01-01T00:00:00Z", "sqn": 1, "reason": 1}',
     "device.imei"),
    ("edge sn letters", b'{"device": {"imei": "1", "sn": "a1"}}', "device.sn"),
    ("edge date missing", b'{"device": {"imei": "1"}, "sqn": 1, "reason": 1}', "date"),
    ("edge lat alone", b'{"device": {"imei": "1"}, "date": "2024-01-01", "sqn": 1, "reason": 1,'
     b' "lng": 2}', "lat"),
    ("edge counter val", b'{"device": {"imei": "1"}, "date": "2024-01-01", "sqn": 1, "reason": 1,'
     b' "counters": [{"id": 3, "val": "x"}]}', "counters[0].val"),
    ("edge battery too big", b'{"device": {"imei": "1"}, "date": "2024-01-01", "sqn": 1,'
     b' "reason": 1, "counters": [{"id": 0, "val": 99999}]}', "counters[0].val"),
    ("edge inputs a string", b'{"device": {"imei": "1"}, "date": "2024-01-01", "sqn": 1,'
     b' "reason": 1, "inputs": "1"}', "inputs"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "body", "field"), BAD, ids=[case[0] for case in BAD])
def test_bad_bodies_name_the_field(what: str, body: bytes, field: str) -> None:
    with pytest.raises(OemJsonError) as caught:
        decode_oem_json(body)
    assert caught.value.field == field, str(caught.value)
    assert str(caught.value).startswith(f"{field}: ") and caught.value.problem
    assert isinstance(caught.value, RemoteProtocolError)


def test_deeply_nested_json_is_a_clear_error() -> None:
    with pytest.raises(OemJsonError) as caught:
        decode_oem_json(b"[" * 100_000 + b"]" * 100_000)
    assert caught.value.field == "$"


# --- properties -----------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
)  # fmt: skip
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)
_keys = st.sampled_from([
    "IMEI", "SerNo", "ICCID", "ProdId", "FW", "Records", "SeqNo", "Reason", "DateUTC", "Fields",
    "FType", "Lat", "Long", "Alt", "Spd", "Head", "PDOP", "PosAcc", "GpsStat", "GpsUTC", "DIn",
    "DOut", "DevStat", "AnalogueData", "TT", "Trim", "Dist", "Dur", "Odo", "RH", "1", "3",
    "device", "imei", "sn", "prod", "rev", "fw", "iccid", "date", "sqn", "reason", "lat", "lng",
    "posAcc", "posInfo", "analogues", "counters", "inputs", "outputs", "status", "id", "val",
])  # fmt: skip
_values = st.one_of(
    _scalars, st.integers(0, 300), st.sampled_from(["2024-01-02 03:04:05", "352093081234567"])
)
#: JSON shaped like OEM bodies (its keys and value kinds), so most examples get deep.
_shaped = st.recursive(
    _values,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=6),
    max_leaves=40,
)


def _outcome(body: bytes) -> None:
    try:
        decoded = decode_oem_json(body)
    except OemJsonError as exc:
        assert exc.field and exc.problem
        assert str(exc) == f"{exc.field}: {exc.problem}"
        return
    assert decoded.device.imei.isdigit()
    for record in decoded.records:
        assert 0 <= record.sequence <= 0xFFFFFFFF


@FAST
@given(_json)
def test_any_json_decodes_or_names_the_field(document: Any) -> None:
    _outcome(json.dumps(document).encode())


@FAST
@given(_shaped)
def test_any_oem_shaped_json_decodes_or_names_the_field(document: Any) -> None:
    _outcome(json.dumps(document).encode())


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_name_the_field(data: bytes) -> None:
    _outcome(data)


@FAST
@given(st.sampled_from([EDGE, TRADITIONAL]), st.data())
def test_a_vector_with_one_value_replaced_decodes_or_names_the_field(
    body: str, data: st.DataObject
) -> None:
    document = json.loads(body)
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        paths.append(path)
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for key, child in items:
            walk(child, [*path, key])

    walk(document, [])
    path = data.draw(st.sampled_from(paths[1:]))
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(_scalars)
    _outcome(json.dumps(document).encode())
