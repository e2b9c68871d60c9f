"""The README's two set-up commands, and that the example works the way it says."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

from helpers import REPO


def setup_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^    (python3 -m venv .*)$", section, flags=re.M)


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    install_run, install_test = setup_commands()
    assert install_run.endswith("cartsync apply manifests/example.yaml")
    assert install_test.endswith(".venv/bin/python -m pytest -q")
    ci = (REPO / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest -q" in ci and "pip install -q '.[test]'" in ci


def test_example_apply_twice_sends_nothing_the_second_time(tmp_path):
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    cmd = [sys.executable, "-m", "cartsync", "apply", str(tmp_path / "manifests" / "example.yaml")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("local: 16 created, 0 replaced, 0 deleted; 211.8 KB sent")
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert (second.returncode, second.stdout) == (0, "local: no changes; 16 file(s) up to date; 0 B sent.\n")
    assert len(list((tmp_path / "example-out" / "mouse-brain").iterdir())) == 16
