"""The README's promises: its quick-start commands, .ci/run using the same test command, the settings table."""

from __future__ import annotations

import re
from pathlib import Path

from studio.config import describe_settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
START = "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && .venv/bin/python app.py"
TESTS = "python3 -m venv .venv && .venv/bin/pip install -q -r requirements-dev.txt && .venv/bin/python -m pytest"


def _code_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)]


def test_quick_start_is_exactly_two_commands():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert _code_blocks(quick_start) == [START, TESTS]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text()
    command_lines = [line for line in ci.splitlines() if line.startswith("python3 -m venv")]
    assert command_lines == [TESTS]
    assert 'rc" -eq 5' in ci  # pytest's "no tests collected" is not a failure


def test_settings_table_lists_every_setting():
    for field, env, flag, _ in describe_settings():
        assert re.search(rf"^\| `{re.escape(flag)}` \| `{env}` \|", README, flags=re.M), field


def test_readme_mentions_the_files_it_points_at():
    for path in ("assets/examples/lighthouse.yaml", "pipelines/registry.py", "app.py", ".ci/run"):
        assert (ROOT / path).exists(), path


def test_every_requirement_is_pinned():
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-r "):
                continue
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z0-9,]+\])?==[0-9][A-Za-z0-9.+]*", line), f"{name}: {line}"
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text().splitlines()
