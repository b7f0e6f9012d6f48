"""Which platform a project's boards boot: --cosim-platform, else its ini option, else virt."""

from __future__ import annotations

from pathlib import Path

from cosim.pytest_plugin import default_platform


class Config:
    def __init__(self, option: str | None, ini: str, inipath: Path | None):
        self.option, self.ini, self.inipath = option, ini, inipath

    def getoption(self, name: str) -> str | None:
        assert name == "--cosim-platform"
        return self.option

    def getini(self, name: str) -> str:
        assert name == "cosim_platform"
        return self.ini


def test_the_ini_file_names_a_yaml_relative_to_itself(tmp_path):
    config = Config(None, "platforms/board.yaml", tmp_path / "pyproject.toml")
    assert default_platform(config) == str(tmp_path / "platforms" / "board.yaml")  # type: ignore[arg-type]


def test_the_command_line_wins_and_a_name_stays_a_name(tmp_path):
    assert default_platform(Config("virt-iommu", "platforms/board.yaml", tmp_path / "x.ini")) == "virt-iommu"  # type: ignore[arg-type]
    assert default_platform(Config(None, "virt", tmp_path / "pyproject.toml")) == "virt"  # type: ignore[arg-type]
    assert default_platform(Config(None, "virt", None)) == "virt"  # type: ignore[arg-type]
