"""The package's guest tests boot its own platform (unless --cosim-platform names another)."""

from __future__ import annotations

from pathlib import Path

import pytest

PLATFORM = Path(__file__).resolve().parent.parent / "platforms" / "pl031.yaml"


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--cosim-platform") == "virt":  # cosim's default: this package's board
        config.option.cosim_platform = str(PLATFORM)
