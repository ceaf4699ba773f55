"""assembler settings, command line and spool directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from assembler.app import prepare_spool
from assembler.settings import AssemblerSettings


@pytest.mark.parametrize(
    ("endpoint", "secure", "host", "tls"),
    [
        ("127.0.0.1:9000", False, "127.0.0.1:9000", False),
        ("127.0.0.1:9000", True, "127.0.0.1:9000", True),
        ("http://minio:9000", False, "minio:9000", False),
        ("HTTPS://s3.example.com/", False, "s3.example.com", True),
    ],
)
def test_s3_endpoint(endpoint: str, secure: bool, host: str, tls: bool) -> None:
    settings = AssemblerSettings(s3_endpoint=endpoint, s3_secure=secure)
    assert (settings.s3_host, settings.s3_tls) == (host, tls)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETGATE_S3_SECRET_KEY", "hush")
    monkeypatch.setenv("FLEETGATE_S3_BUCKET", "cams")
    monkeypatch.setenv("FLEETGATE_BROKER_SESSION_TIMEOUT_SECONDS", "6")
    settings = AssemblerSettings()
    assert settings.s3_secret_key.get_secret_value() == "hush"
    assert "hush" not in repr(settings)
    assert (settings.s3_bucket, settings.broker_session_timeout_seconds) == ("cams", 6.0)
    with pytest.raises(ValueError, match="s3_part_size"):
        AssemblerSettings(s3_part_size=1024)


def test_help_lists_the_settings() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fleetgate", "assembler", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for text in ("--s3-endpoint", "FLEETGATE_S3_BUCKET", "--spool-dir", "--s3-concurrency"):
        assert text in result.stdout


def test_spools_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"pid-{dead.pid}" / "files").mkdir(parents=True)
    (tmp_path / f"pid-{os.getppid()}").mkdir()  # alive: kept
    (tmp_path / "pid-x").mkdir()  # not ours: kept
    mine = prepare_spool(tmp_path)
    assert mine == tmp_path / f"pid-{os.getpid()}" and mine.is_dir()
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {f"pid-{os.getpid()}", f"pid-{os.getppid()}", "pid-x"}


async def test_faust_consumer_takes_the_configured_fetch_wait(tmp_path: Path) -> None:
    """faust builds its consumer with a fixed 1.5 s fetch wait; the assembler's takes
    ``FLEETGATE_KAFKA_FETCH_MAX_WAIT_MS`` (Tansu holds an empty fetch for the whole wait)."""
    from assembler.app import create_app

    for wait in (100, 500):
        app = create_app(AssemblerSettings(kafka_fetch_max_wait_ms=wait), tmp_path)
        thread = app.consumer._thread  # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        assert consumer._fetch_max_wait_ms == wait
        assert consumer._group_id == app.conf.id  # still faust's own worker consumer
