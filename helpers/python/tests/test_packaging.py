"""The package installs with pip (stdlib only, typed) and passes mypy --strict."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import PACKAGE_ROOT

TYPED_USAGE = textwrap.dedent("""
    from typing import Any, Dict, Optional, Union
    import cronium

    def job() -> None:
        value: Any = cronium.get_variable("k")
        exists: bool = cronium.variable_exists("k")
        gone: bool = cronium.delete_variable("k")
        total: Union[int, float] = cronium.increment_variable("n", by=2)
        cond: Optional[bool] = cronium.get_condition()
        event: Optional[Dict[str, Any]] = cronium.event()
        cronium.set_condition(True)
        cronium.output({"value": value, "exists": exists, "gone": gone, "total": total,
                        "cond": cond, "event": event})
        client = cronium.Cronium(timeout=5, max_attempts=2)
        try:
            client.getVariable("x")
        except cronium.CroniumAPIError as exc:
            status: int = exc.status_code
            code: Optional[str] = exc.code
            print(status, code, exc.message)

    async def ajob() -> Optional[bool]:
        await cronium.async_set_variable("k", 1)
        return await cronium.AsyncCronium().get_condition()
""")


def _copy_source(dest: Path) -> Path:
    # Build from a copy so the source tree stays free of build/ and egg-info.
    src = dest / "src"
    shutil.copytree(PACKAGE_ROOT, src, ignore=shutil.ignore_patterns(
        "tests", "__pycache__", "build", "*.egg-info", ".mypy_cache"))
    return src


def test_pip_install_gives_a_typed_importable_package(tmp_path: Path) -> None:
    src = _copy_source(tmp_path)
    target = tmp_path / "site"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--no-deps",
         "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "cronium" / "py.typed").is_file()
    assert (target / "cronium" / "_transport.py").is_file()
    assert list(target.glob("cronium-*.dist-info"))
    probe = subprocess.run(
        [sys.executable, "-c", "import cronium, sys; print(cronium.__file__); print(cronium.__version__)"],
        capture_output=True, text=True, timeout=30,
        env={k: v for k, v in env.items() if not k.startswith("CRONIUM_")} | {"PYTHONPATH": str(target)},
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.splitlines()[0].startswith(str(target))
    metadata = next(target.glob("cronium-*.dist-info")) / "METADATA"
    text = metadata.read_text()
    assert "Requires-Python: >=3.9" in text
    assert "Requires-Dist" not in text  # standard library only


def test_mypy_strict_passes_on_the_package_and_a_typed_script(tmp_path: Path) -> None:
    mypy = shutil.which("mypy")
    assert mypy is not None, "mypy is not installed (Debian package 'mypy')"
    usage = tmp_path / "usage.py"
    usage.write_text(TYPED_USAGE)
    for version in ("3.9", f"{sys.version_info.major}.{sys.version_info.minor}"):
        result = subprocess.run(
            [mypy, "--strict", "--python-version", version, "--cache-dir", str(tmp_path / "cache"),
             str(PACKAGE_ROOT / "cronium"), str(usage)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
            env=dict(os.environ, MYPYPATH=str(PACKAGE_ROOT)),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Success" in result.stdout


def test_mypy_catches_a_type_error_in_a_script(tmp_path: Path) -> None:
    # Guard against the check above passing vacuously: a wrong call must be reported.
    mypy = shutil.which("mypy")
    assert mypy is not None
    bad = tmp_path / "bad.py"
    bad.write_text("import cronium\ncronium.set_condition('yes')\nx: str = cronium.variable_exists('k')\n")
    result = subprocess.run(
        [mypy, "--strict", "--cache-dir", str(tmp_path / "cache"), str(bad)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=dict(os.environ, MYPYPATH=str(PACKAGE_ROOT)),
    )
    assert result.returncode == 1
    assert "bad.py:2" in result.stdout and "bad.py:3" in result.stdout
