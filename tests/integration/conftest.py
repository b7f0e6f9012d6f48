"""Integration tests: each boots the real arm64 guest in the project's QEMU."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from cosim.platform import resolve_platform_path

# A sample user repository, run by pytest from a copy outside cosim's tree (test_user_repository)
collect_ignore = ["user_repository"]

def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)



def virt_with(folder: Path, peripheral: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """The default platform with ``change`` applied to one peripheral's entry, written to
    ``folder``: the file to boot."""
    spec = yaml.safe_load(resolve_platform_path("virt").read_text())
    change(next(p for p in spec["peripherals"] if p["name"] == peripheral))
    path = folder / "board.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
