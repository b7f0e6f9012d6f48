"""A platform's guest section: what loads, errors that name file and line, Debian package
resolution against apt's real arm64 indices, the kernel-option check."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosim import debian
from cosim.build import COSIM_FRAGMENT, BuildError, check_config, option_purposes
from cosim.guestimage import GuestAdditions, kernel_changes
from cosim.platform import PlatformError, load_platform

PLATFORM = """\
name: acme
guest:
  bootargs: quiet
  modules:
    - path: drivers/acme
      load: [acme_client iterations=3]
  programs: [tests/acme-test.c]
  packages: [mtd-utils]
  files: {data/image.bin: /tmp/image.bin}
  kernel:
    options: [CONFIG_DMATEST=y]
    fragments: [acme.config]
"""


def repo(tmp_path: Path, platform: str = PLATFORM) -> Path:
    for folder in ("drivers/acme", "tests", "data"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "drivers/acme/Kbuild").write_text("obj-m += acme_client.o\n")
    (tmp_path / "tests/acme-test.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "data/image.bin").write_bytes(b"\xff" * 16)
    (tmp_path / "acme.config").write_text("CONFIG_DMATEST=y\n")
    (tmp_path / "acme.yaml").write_text(platform)
    return tmp_path / "acme.yaml"


def test_a_guest_section_loads_with_paths_from_its_file(tmp_path):
    platform = load_platform(repo(tmp_path))
    guest = platform.spec.guest
    assert guest.modules[0].load == ["acme_client iterations=3"]
    assert guest.packages == ["mtd-utils"] and not guest.is_empty()
    assert platform.guest_path(guest.modules[0].path, "modules", 0, "path", folder=True) == \
        (tmp_path / "drivers/acme").resolve()
    changes = kernel_changes(platform)
    assert changes.options == ("CONFIG_DMATEST=y",)
    assert changes.fragments == ((tmp_path / "acme.config").resolve(),)


def test_a_missing_path_names_its_line(tmp_path):
    platform = load_platform(repo(tmp_path, PLATFORM.replace("drivers/acme", "drivers/nope")))
    with pytest.raises(PlatformError, match=r"acme\.yaml:5: guest\.modules\.0\.path: no folder .*/nope"):
        platform.guest_path("drivers/nope", "modules", 0, "path", folder=True)


def test_an_unknown_guest_key_lists_the_allowed_ones(tmp_path):
    with pytest.raises(PlatformError) as info:
        load_platform(repo(tmp_path, PLATFORM.replace("  packages:", "  pakages:")))
    assert "acme.yaml:8: unknown key 'pakages'" in str(info.value)
    assert "packages" in str(info.value) and "overlay" in str(info.value)


def test_a_bad_kernel_option_is_refused(tmp_path):
    with pytest.raises(PlatformError, match=r"acme\.yaml:11: .*'DMATEST' is not an option setting"):
        load_platform(repo(tmp_path, PLATFORM.replace("[CONFIG_DMATEST=y]", "[DMATEST]")))


def test_a_guest_file_the_platform_names(tmp_path):
    section = PLATFORM.split("guest:\n")[1]
    guest_file = "\n".join(line[2:] for line in section.splitlines()) + "\n"
    path = repo(tmp_path, "name: acme\nguest: guest/acme-guest.yaml\n")
    (tmp_path / "guest").mkdir()
    (tmp_path / "guest/acme-guest.yaml").write_text(guest_file.replace("drivers/acme", "../drivers/acme"))
    platform = load_platform(path)
    assert platform.spec.guest.bootargs == "quiet"
    assert platform.guest_path("../drivers/acme", "modules", 0, "path", folder=True).name == "acme"
    assert platform.guest_where("packages") == f"{tmp_path / 'guest/acme-guest.yaml'}:6"
    (tmp_path / "guest/acme-guest.yaml").write_text(guest_file.replace("files:", "filez:"))
    with pytest.raises(PlatformError, match=r"acme-guest\.yaml:7: unknown key 'filez'"):
        load_platform(path)
    path.write_text("name: acme\nguest: guest/missing.yaml\n")
    with pytest.raises(PlatformError, match=r"acme\.yaml:2: guest: no file .*missing\.yaml"):
        load_platform(path)


def test_a_tests_additions_are_checked(tmp_path):
    origin = GuestAdditions(tmp_path, "tests/test_x.py::test_y")
    assert origin.content({"files": {"a": "/b"}}).files == {"a": "/b"}
    with pytest.raises(PlatformError, match=r"test_x\.py::test_y: guest\.moduels"):
        origin.content({"moduels": []})
    with pytest.raises(PlatformError, match=r"guest\['files'\]\['a'\]: no path"):
        origin.guest_path("a", "files", "a")


@pytest.fixture(scope="module")
def index() -> debian.Index:
    return debian.Index(debian.index_files())


def test_packages_resolve_through_libraries_only(index):
    names = {p.name for p in index.resolve(["alsa-utils"])}
    assert {"alsa-utils", "libasound2", "libasound2-data", "libc6"} <= names
    assert "zlib1g" in {p.name for p in index.resolve(["mtd-utils"])}  # a library by its section
    assert not names & {"kmod", "lsb-base"}  # tools its maintainer scripts use
    assert all(p.architecture in ("arm64", "all") for p in index.resolve(["alsa-utils"]))


def test_a_package_that_does_not_exist_is_named(index):
    with pytest.raises(debian.PackageError, match="'no-such-tool': no such Debian bookworm package"):
        index.resolve(["no-such-tool"])


def test_an_option_that_did_not_take_is_named_with_its_reason(tmp_path):
    (tmp_path / "Kconfig").write_text("config DMATEST\n\tbool\nconfig DMA_API_DEBUG\n\tbool\n")
    (tmp_path / ".config").write_text("# CONFIG_DMATEST is not set\nCONFIG_DMA_API_DEBUG=y\n")
    wanted = [("cosim", {"CONFIG_DMA_API_DEBUG": "y", "CONFIG_PL330_DMA": "y"}),
              ("guest.kernel.options", {"CONFIG_DMATEST": "y"})]
    with pytest.raises(BuildError) as info:
        check_config(tmp_path, wanted, option_purposes(COSIM_FRAGMENT))
    text = str(info.value)
    assert "CONFIG_DMATEST=y (guest.kernel.options): got n: a dependency is not met" in text
    assert ("CONFIG_PL330_DMA=y (cosim): this tree has no such option; cosim needs it for: "
            "DMA engines and tests") in text
    assert "DMA_API_DEBUG" not in text


@pytest.mark.parametrize(("older", "newer"), [
    ("1.0", "1.1"), ("1.0~rc1", "1.0"), ("1.0~~", "1.0~"), ("2.36-9+deb12u7", "2.36-9+deb12u14"),
    ("2.0", "1:1.0"), ("1.0", "1.0a"), ("1.0", "1.0-1"), ("9", "10"), ("1.2.8-1", "1.2.8-1+b1")])
def test_debian_version_order(older, newer):
    assert debian.compare_versions(older, newer) == -1
    assert debian.compare_versions(newer, older) == 1
    assert debian.compare_versions(newer, newer) == 0


def test_the_candidate_is_the_highest_version_of_the_suites(index):
    # the security suite's index can still list an older libc6 than a later point release
    (libc6,) = [p for p in index.resolve(["libc6"]) if p.name == "libc6"]
    assert not libc6.version.endswith("deb12u7")
