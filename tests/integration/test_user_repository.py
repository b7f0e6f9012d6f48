"""A user's own repository, outside cosim's tree: their platform, their plugin model, their
out-of-tree dmaengine client module and C test program (``user_repository/``), built by cosim and
run by pytest there with cosim's fixtures."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).parent / "user_repository"


def test_a_users_repository_builds_and_runs_its_own_driver_and_program(tmp_path):
    repo = tmp_path / "acme"
    shutil.copytree(SAMPLE, repo)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={tmp_path / 'junit.xml'}"],
                          cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout
    assert 'tests="4"' in (tmp_path / "junit.xml").read_text()


def test_a_module_that_does_not_compile_names_the_users_file(tmp_path):
    repo = tmp_path / "acme"
    shutil.copytree(SAMPLE, repo)
    source = repo / "drivers/acme_dma/acme_dma.c"
    source.write_text(source.read_text().replace("mutex_lock(&lock);", "mutex_lock(&lock)", 1))
    proc = subprocess.run([sys.executable, "-m", "cosim.cli", "build", "acme.yaml"], cwd=repo,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert f"{source}:" in proc.stderr and "error: expected" in proc.stderr, proc.stderr
