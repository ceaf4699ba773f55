"""FILE METADATA RESPONSE (0x000B) payloads: hand-built bytes in, decoded values out."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from camproto import (
    AdasMetadata,
    Camera,
    DsmMetadata,
    DualCamMetadata,
    JsonMetadata,
    RawMetadata,
    decode_metadata,
)
from camproto.metadata import DSM_EVENTS

h = bytes.fromhex

# version 1 | type 16 (front video) | ts ms | trigger 3 crash | 20 s | 25 fps | tz -60 | lat | lon
DUALCAM_32 = struct.pack(">BBQBHBhdd", 1, 16, 1_697_800_000_123, 3, 20, 25, -60, 54.5, -3.25)


def test_dualcam_32() -> None:
    got = decode_metadata(DUALCAM_32, Camera.DUALCAM, 5)
    assert got == DualCamMetadata(
        version=1,
        file_type=16,
        timestamp_ms=1_697_800_000_123,
        trigger=3,
        duration_s=20,
        framerate=25,
        timezone_min=-60,
        latitude=54.5,
        longitude=-3.25,
        trigger_timestamp_ms=None,
    )
    assert isinstance(got, DualCamMetadata)
    assert got.trigger_name == "crash"
    assert got.camera is Camera.DUALCAM
    assert got.encode() == DUALCAM_32


def test_dualcam_40_with_trigger_timestamp() -> None:
    payload = DUALCAM_32 + (1_697_799_999_000).to_bytes(8, "big")
    got = decode_metadata(payload, Camera.DUALCAM, 5)
    assert isinstance(got, DualCamMetadata)
    assert got.trigger_timestamp_ms == 1_697_799_999_000
    assert got.encode() == payload


def test_dsm_26_driver_name_reversed_on_the_wire() -> None:
    # ts 1697800000 s | snapshot | trigger 13 dsm_event | lat 54.687157 | lon -25.279652 |
    # events drowsiness+phone+g_sensor | driver "JONAS" stored reversed, NUL padded.
    payload = (
        h("65325f40")
        + h("01")
        + h("0d")
        + (54_687_157).to_bytes(4, "big", signed=True)
        + (-25_279_652).to_bytes(4, "big", signed=True)
        + h("0109")
        + b"SANOJ\0\0\0\0\0"
    )
    assert len(payload) == 26
    got = decode_metadata(payload, Camera.DSM, 5)
    assert got == DsmMetadata(
        timestamp_ms=1_697_800_000_000,
        file_type=1,
        trigger=13,
        latitude=54.687157,
        longitude=-25.279652,
        events=("drowsiness", "phone", "g_sensor"),
        driver_name="JONAS",
    )
    assert isinstance(got, DsmMetadata)
    assert got.trigger_name == "dsm_event"
    assert got.encode() == payload


def test_dsm_full_length_driver_name() -> None:
    payload = bytes(16) + b"JIHGFEDCBA"
    got = decode_metadata(payload, Camera.DSM, 5)
    assert isinstance(got, DsmMetadata)
    assert got.driver_name == "ABCDEFGHIJ"
    assert got.events == ()
    assert got.trigger_name == "none"


def test_adas_15() -> None:
    payload = (
        h("65325f40")
        + h("00")
        + h("05")
        + (54_000_001).to_bytes(4, "big", signed=True)
        + (-1).to_bytes(4, "big", signed=True)
        + h("0a")
    )
    got = decode_metadata(payload, Camera.ADAS, 5)
    assert got == AdasMetadata(
        timestamp_ms=1_697_800_000_000,
        file_type=0,
        trigger=5,
        latitude=54.000001,
        longitude=-0.000001,
        duration_s=10,
    )
    assert isinstance(got, AdasMetadata)
    # ADAS triggers are numbered as DualCam's (5 idling), not as DSM's (5 crash).
    assert got.trigger_name == "idling"
    assert got.encode() == payload


def test_dsm_event_bits_9_to_15_are_kept() -> None:
    payload = bytes(14) + h("fe01") + bytes(10)
    got = decode_metadata(payload, Camera.DSM, 5)
    assert isinstance(got, DsmMetadata)
    assert got.events == ("drowsiness",)
    assert got.unnamed_events == 0xFE00
    assert got.events_mask == 0xFE01
    assert got.encode() == payload


def test_dsm_non_ascii_driver_name() -> None:
    # "Jūratė" reversed as text, then UTF-8 encoded, NUL padded (the reference server decodes
    # the bytes, then reverses the string).
    payload = bytes(16) + "ėtarūJ".encode() + b"\0\0"
    got = decode_metadata(payload, Camera.DSM, 5)
    assert isinstance(got, DsmMetadata)
    assert got.driver_name == "Jūratė"
    assert got.encode() == payload


def test_dsm_driver_name_longer_than_ten_bytes_is_cut_on_a_character() -> None:
    meta = DsmMetadata(
        timestamp_ms=0,
        file_type=0,
        trigger=0,
        latitude=0.0,
        longitude=0.0,
        events=(),
        driver_name="abcdefghiė",  # 11 bytes; reversed, the two-byte ė comes first
    )
    assert meta.encode()[16:] == "ėihgfedcb".encode()


@pytest.mark.parametrize(
    ("payload", "camera"),
    [
        (bytes(13), Camera.DUALCAM),  # the early 13-byte DualCam layout is not decoded
        (bytes(33), Camera.DUALCAM),
        (bytes(26), Camera.DUALCAM),  # a DSM length for a DualCam file
        (bytes(32), Camera.DSM),
        (bytes(15), Camera.DSM),
        (bytes(26), Camera.ADAS),
        (bytes(1), Camera.UNKNOWN),
        (bytes(26), Camera.DASHCAM),
        (b"{not json", Camera.DUALCAM),  # protocol 5: JSON is not looked for
    ],
)
def test_unknown_layouts_are_raw(payload: bytes, camera: Camera) -> None:
    got = decode_metadata(payload, camera, 5)
    assert got == RawMetadata(payload=payload)
    assert got.encode() == payload
    assert got.camera is Camera.UNKNOWN


@pytest.mark.parametrize(
    ("size", "kind"),
    [(32, DualCamMetadata), (40, DualCamMetadata), (26, DsmMetadata), (15, AdasMetadata)],
)
def test_unknown_camera_decodes_by_length(size: int, kind: type) -> None:
    assert isinstance(decode_metadata(bytes(size), Camera.UNKNOWN, 5), kind)


def test_protocol_6_json() -> None:
    payload = (
        b'{"version":2,"file":{"file_type":1,"file_timestamp":1697800000,"duration":10,'
        b'"framerate":25},"fm_trigger":{"type":1},"cam_trigger":{"type":0},'
        b'"location":{"latitude":54.6,"longitude":25.2},"driver_name":"J\xc3\xb6nas"}'
    )
    got = decode_metadata(payload, Camera.DUALCAM, 6)
    assert isinstance(got, JsonMetadata)
    assert got.fields["file"]["file_timestamp"] == 1697800000
    assert got.fields["location"]["latitude"] == 54.6
    assert got.fields["driver_name"] == "Jönas"
    assert got.camera is Camera.UNKNOWN
    assert decode_metadata(got.encode(), Camera.DUALCAM, 6) == got


@pytest.mark.parametrize(
    "payload",
    [
        b"{broken",
        b'{"a":1}}',
        b"{\xff}",
        b'{"a":' + b"[" * 1015 + b"}",  # deeper than the interpreter's recursion limit
    ],
    ids=["broken", "trailing", "not-utf8", "deep-nesting"],
)
def test_protocol_6_bad_json_is_raw(payload: bytes) -> None:
    assert decode_metadata(payload, Camera.DSM, 6) == RawMetadata(payload=payload)


def test_protocol_6_binary_layouts_still_decode() -> None:
    assert isinstance(decode_metadata(DUALCAM_32, Camera.DUALCAM, 6), DualCamMetadata)


def test_unknown_trigger_names() -> None:
    meta = DualCamMetadata(
        version=1,
        file_type=4,
        timestamp_ms=0,
        trigger=99,
        duration_s=0,
        framerate=0,
        timezone_min=0,
        latitude=0.0,
        longitude=0.0,
    )
    assert meta.trigger_name == "unknown_99"
    assert DualCamMetadata.__dataclass_fields__["trigger_timestamp_ms"].default is None


# --- round trips --------------------------------------------------------------------------------

MICRODEGREES = st.integers(-(2**31), 2**31 - 1).map(lambda n: n / 1e6)
FINITE = st.floats(allow_nan=False)


@settings(max_examples=60)
@given(
    version=st.integers(0, 255),
    file_type=st.sampled_from([4, 8, 16, 32]),
    timestamp_ms=st.integers(0, 2**64 - 1),
    trigger=st.integers(0, 255),
    duration_s=st.integers(0, 2**16 - 1),
    framerate=st.integers(0, 255),
    timezone_min=st.integers(-(2**15), 2**15 - 1),
    latitude=FINITE,
    longitude=FINITE,
    trigger_timestamp_ms=st.none() | st.integers(0, 2**64 - 1),
)
def test_dualcam_round_trip(**fields: Any) -> None:
    meta = DualCamMetadata(**fields)
    payload = meta.encode()
    assert len(payload) == (32 if meta.trigger_timestamp_ms is None else 40)
    assert decode_metadata(payload, Camera.DUALCAM, 5) == meta


@settings(max_examples=60)
@given(
    seconds=st.integers(0, 2**32 - 1),
    file_type=st.integers(0, 255),
    trigger=st.integers(0, 255),
    latitude=MICRODEGREES,
    longitude=MICRODEGREES,
    mask=st.integers(0, 0xFFFF),
    driver_name=st.text(
        st.characters(min_codepoint=0x21, exclude_categories=("Cs", "Zs", "Cc")), max_size=10
    ).filter(lambda name: len(name.encode()) <= 10),
)
def test_dsm_round_trip(
    seconds: int,
    file_type: int,
    trigger: int,
    latitude: float,
    longitude: float,
    mask: int,
    driver_name: str,
) -> None:
    meta = DsmMetadata(
        timestamp_ms=seconds * 1000,
        file_type=file_type,
        trigger=trigger,
        latitude=latitude,
        longitude=longitude,
        events=tuple(name for bit, name in enumerate(DSM_EVENTS) if mask >> bit & 1),
        driver_name=driver_name,
        unnamed_events=mask & 0xFE00,
    )
    payload = meta.encode()
    assert len(payload) == 26
    assert payload[16:].rstrip(b"\0") == driver_name[::-1].encode()  # reversed on the wire
    assert decode_metadata(payload, Camera.DSM, 5) == meta


@settings(max_examples=60)
@given(
    seconds=st.integers(0, 2**32 - 1),
    file_type=st.integers(0, 3),
    trigger=st.integers(0, 255),
    latitude=MICRODEGREES,
    longitude=MICRODEGREES,
    duration_s=st.integers(0, 255),
)
def test_adas_round_trip(
    seconds: int, file_type: int, trigger: int, latitude: float, longitude: float, duration_s: int
) -> None:
    meta = AdasMetadata(
        timestamp_ms=seconds * 1000,
        file_type=file_type,
        trigger=trigger,
        latitude=latitude,
        longitude=longitude,
        duration_s=duration_s,
    )
    payload = meta.encode()
    assert len(payload) == 15
    assert decode_metadata(payload, Camera.ADAS, 5) == meta


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=60)
@given(fields=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5))
def test_json_round_trip(fields: dict[str, Any]) -> None:
    meta = JsonMetadata(fields=fields)
    assert decode_metadata(meta.encode(), Camera.UNKNOWN, 6) == meta


@settings(max_examples=100)
@given(
    payload=st.binary(min_size=1, max_size=1024),
    camera=st.sampled_from(Camera),
    protocol=st.sampled_from([5, 6]),
)
def test_any_payload_decodes_to_something(payload: bytes, camera: Camera, protocol: int) -> None:
    # Metadata is informative: any payload decodes, and an unknown one is kept byte for byte.
    got = decode_metadata(payload, camera, protocol)
    if isinstance(got, RawMetadata):
        assert got.payload == payload
    elif isinstance(got, JsonMetadata):
        assert protocol >= 6
    else:
        assert len(payload) in (15, 26, 32, 40)
