"""Run fleetgate services as processes and read their /metrics, /healthz and /readyz."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devstack.infra import free_port
from tests.helpers import eventually_sync

FLEETGATE = [sys.executable, "-m", "fleetgate"]
ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


def env(**values: str) -> dict[str, str]:
    """This process's environment without FLEETGATE_* variables, plus ``values``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEETGATE_")}
    return base | values


def wait_until(condition: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    """:func:`tests.helpers.eventually_sync` with this module's argument order and deadline."""
    eventually_sync(condition, within, what)


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def get(self, path: str) -> httpx.Response | None:
        """GET ``path`` from the service's HTTP server; None while it does not answer."""
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}"
            )
        try:
            return httpx.get(self.url + path, timeout=5)
        except httpx.TransportError:
            return None

    def status(self, path: str) -> int | None:
        response = self.get(path)
        return None if response is None else response.status_code

    def wait_ready(self, within: float = DEADLINE) -> None:
        wait_until(lambda: self.status("/readyz") == 200, f"{self.name} /readyz 200", within)

    def metric_names(self) -> set[str]:
        response = self.get("/metrics")
        assert response is not None and response.status_code == 200
        return exposition_names(response.text)


def exposition_names(text: str) -> set[str]:
    """Every sample name in a Prometheus text exposition (``x_bucket``, ``x_total``...)."""
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            if match:
                names.add(match.group(0))
    return names


class Services:
    """Starts services as processes; kills what is left at the end of the test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Service] = []

    def start(self, name: str, *args: str, **variables: str) -> Service:
        port = free_port()
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*FLEETGATE, name, *args],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env(
                    FLEETGATE_METRICS_HOST="127.0.0.1",
                    FLEETGATE_METRICS_PORT=str(port),
                    FLEETGATE_LOG_JSON="true",
                    **variables,
                ),
            )
        service = Service(name, process, port, log)
        self.started.append(service)
        return service

    def stop(self) -> None:
        for service in reversed(self.started):
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait()


def docker_available() -> bool:
    """True where a Docker engine answers (testcontainers and `docker` can run)."""
    from docker.errors import DockerException  # type: ignore[import-untyped]

    import docker  # type: ignore[import-untyped]

    try:  # no engine, no socket, no permission: all mean "no Docker here"
        client = docker.from_env(timeout=2)
    except (DockerException, OSError):
        return False
    try:
        client.ping()
    except (DockerException, OSError):  # requests' errors are OSErrors
        return False
    finally:
        client.close()
    return True


def setting_variables(component: str) -> set[str]:
    """Every ``FLEETGATE_*`` variable ``component`` reads: its settings and, for the ingestor,
    each hosted protocol's listener settings (``FLEETGATE_<PROTOCOL>_*``) and the OEM JSON
    intake's (``FLEETGATE_HTTP_*``)."""
    from assembler.settings import AssemblerSettings
    from connector.settings import ConnectorSettings
    from ingestor.protocols import PROTOCOLS
    from ingestor.settings import IngestorSettings

    services: dict[str, type[Any]] = {
        "ingestor": IngestorSettings,
        "assembler": AssemblerSettings,
        "connector": ConnectorSettings,
    }
    names = {f"FLEETGATE_{f.upper()}" for f in services[component].model_fields}
    if component == "ingestor":
        for name, protocol in PROTOCOLS.items():
            fields = protocol.settings_class.model_fields
            names |= {f"FLEETGATE_{name.upper()}_{f.upper()}" for f in fields}
        from ingestor.oem import HttpSettings  # the OEM JSON intake: FLEETGATE_HTTP_*

        names |= {f"FLEETGATE_HTTP_{f.upper()}" for f in HttpSettings.model_fields}
    return names
