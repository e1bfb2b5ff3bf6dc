"""The character area's studio modules stay cheap to import (the UI process and the CLI load them)."""

from __future__ import annotations

import subprocess
import sys


def test_studio_modules_do_not_import_torch():
    code = (
        "import sys, studio.characters.records, studio.characters.references, studio.characters.adapters, "
        "studio.characters.training, studio.characters.runtime, studio.characters.shipped, "
        "studio.characters.commands; "
        "print(sorted(m for m in ('torch', 'diffusers', 'peft', 'insightface') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
