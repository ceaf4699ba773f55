"""Issue 8's scenarios as first reported, at full size (too slow for ``make test``): 20 cameras,
a 2 MB video each at 200 kB/s, against ``fleetgate devstack``; at 5 s a SIGKILL of one service,
or SIGINT (Ctrl-C) to the devstack. Prints one line per scenario.

    .venv/bin/python -m tests.devstack.scenarios
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from simulator import ContentSpec, Faults, Fleet, SimulationConfig
from tests.devstack.devstack_helpers import accepted_files, devstack

#: What 20 links of 200 kB/s carry in 5 s: "5 s into the upload".
_FIVE_SECONDS = 20 * 200_000 * 5


async def _until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within} s")
        await asyncio.sleep(0.05)


def _config(port: int, seed: int, reconnects: int) -> SimulationConfig:
    return SimulationConfig(
        port=port,
        devices=20,
        dualcam_ratio=0.5,
        content=ContentSpec(photos=0, videos=1, video_size=2_000_000),
        faults=Faults(slow=200_000),
        seed=seed,
        timeout=200,
        max_reconnects=reconnects,
        reconnect_backoff=0.2,
    )


async def kill(workdir: Path, service: str) -> str:
    with devstack(workdir) as stack:
        config = _config(stack.camera_port, 31, 100)
        fleet = Fleet(config)
        run = asyncio.create_task(fleet.run())
        await _until(lambda: fleet.progress().bytes_sent >= _FIVE_SECONDS, 60)
        os.kill(stack.child(service), signal.SIGKILL)
        killed = time.monotonic()
        report = await run
        expected = accepted_files(config, report)
        await _until(lambda: len(stack.objects()) >= len(expected), 120)
        stored = sorted(stack.objects().values())
        intact = sum(data in stored for data in expected)
        return (
            f"SIGKILL {service} 5 s in: accepted {len(expected)}/20, stored intact {intact}, "
            f"all stored {time.monotonic() - killed:.1f} s after the kill, "
            f"stack running {stack.process.poll() is None}"
        )


async def ctrl_c(workdir: Path) -> str:
    with devstack(workdir) as stack:
        config = _config(stack.camera_port, 32, 2)
        fleet = Fleet(config)
        run = asyncio.create_task(fleet.run())
        await _until(lambda: fleet.progress().bytes_sent >= _FIVE_SECONDS, 60)
        stack.process.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        report = await run
        await _until(lambda: stack.process.poll() is not None, 150)
        took = time.monotonic() - stopped
        expected = accepted_files(config, report)
        stored = sorted(stack.objects().values())
        intact = sum(data in stored for data in expected)
        return (
            f"Ctrl-C 5 s in: accepted {len(expected)}/20, stored intact {intact} after the "
            f"stack exited ({took:.1f} s, status {stack.process.returncode})"
        )


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="fleetgate-scenarios-") as tmp:
        for service in ("assembler", "ingestor", "connector"):
            (Path(tmp) / service).mkdir()
            print(await kill(Path(tmp) / service, service), flush=True)
        (Path(tmp) / "ctrl-c").mkdir()
        print(await ctrl_c(Path(tmp) / "ctrl-c"), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
