"""Settings shared by the services: one S3 endpoint parser, durations in seconds, and
per-protocol settings that cannot collide."""

from __future__ import annotations

import argparse

import pytest
from pydantic_settings import BaseSettings

from assembler.settings import AssemblerSettings
from connector.settings import ConnectorSettings
from ingestor import cli
from ingestor.protocols import PROTOCOLS
from ingestor.settings import IngestorSettings
from runtime.cli import settings_from_args
from runtime.settings import split_s3_endpoint, split_s3_url


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("127.0.0.1:9000", ("127.0.0.1:9000", False)),
        (" http://minio:9000 ", ("minio:9000", False)),
        ("HTTPS://s3.example.com/bucket", ("s3.example.com", True)),
    ],
)
def test_one_s3_endpoint_parser_for_every_service(
    endpoint: str, expected: tuple[str, bool]
) -> None:
    assert split_s3_endpoint(endpoint) == expected
    for settings in (
        AssemblerSettings(s3_endpoint=endpoint),
        ConnectorSettings(s3_endpoint=endpoint),
    ):
        assert (settings.s3_host, settings.s3_tls) == expected


def test_public_url_is_checked_where_it_is_read() -> None:
    assert split_s3_url("https://files.example.com:8443") == ("files.example.com:8443", True)
    with pytest.raises(ValueError, match="must have no path"):
        ConnectorSettings(s3_public_url="https://files.example.com/x")


def test_durations_say_their_unit() -> None:
    classes: list[type[BaseSettings]] = [IngestorSettings, AssemblerSettings, ConnectorSettings]
    classes += [protocol.settings_class for protocol in PROTOCOLS.values()]
    for cls in classes:
        for name, field in cls.model_fields.items():
            if field.annotation is float and not name.startswith("kafka_"):
                assert name.endswith("_seconds"), f"{cls.__name__}.{name}"


def test_each_protocol_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETGATE_CAMERA_PORT", "6000")
    monkeypatch.setenv("FLEETGATE_CAMERA_IDLE_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("FLEETGATE_CAMERA_ENABLED", "false")
    monkeypatch.setenv("FLEETGATE_MAX_CONNECTIONS", "9")
    camera = PROTOCOLS["camera"].settings_class()
    assert (camera.port, camera.idle_timeout_seconds, camera.enabled) == (6000, 7.0, False)
    assert camera.max_connections == 0  # FLEETGATE_MAX_CONNECTIONS is the process's
    assert IngestorSettings().max_connections == 9


def test_protocol_options_on_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(
        ["--max-connections", "5", "--camera-port", "6001", "--no-camera-enabled"]
    )
    camera = settings_from_args(PROTOCOLS["camera"].settings_class, args, prefix="camera_")
    assert (camera.port, camera.enabled, camera.max_connections) == (6001, False, 0)
    assert settings_from_args(IngestorSettings, args).max_connections == 5
    assert "FLEETGATE_CAMERA_IDLE_TIMEOUT_SECONDS" in parser.format_help().replace("\n", " ")
