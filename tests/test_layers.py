"""The layers of docs/ARCHITECTURE.md ("Layers") hold: every `import` statement in the code (top level or inside a
function, read with `ast`, relative imports resolved) points the way the dependencies flow.

- `pipelines/` and `adapters/` never import `studio` (nor gradio or the database): they run without the studio.
- Nothing in `studio/` outside `studio/ui/` imports gradio or `studio.ui`: services, the character area (its
  records included), the worker, export and the CLI work headless.
- `studio/ui/` never touches the database (`studio.db`, sqlalchemy) or a model (torch, diffusers, transformers,
  peft, `pipelines`, `adapters`) itself: it goes through the services.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LayerRule:
    name: str
    packages: tuple[str, ...]  # folders (relative to the repository root) whose modules the rule covers
    forbidden: tuple[str, ...]  # module prefixes those modules may not import
    exempt: tuple[str, ...] = ()  # folders inside `packages` the rule does not cover


RULES = (
    LayerRule(
        "pipelines and adapters stand without the studio",
        packages=("pipelines", "adapters"),
        forbidden=("studio", "gradio", "sqlalchemy"),
    ),
    LayerRule(
        "only the UI imports gradio",
        packages=("studio",),
        forbidden=("gradio", "studio.ui"),
        exempt=("studio/ui",),
    ),
    LayerRule(
        "the UI touches neither the database nor a model",
        packages=("studio/ui",),
        forbidden=("studio.db", "sqlalchemy", "torch", "diffusers", "transformers", "peft", "pipelines", "adapters"),
    ),
)

# Known imports that cross a rule on purpose, each with why. Keys: (file or folder, imported module).
ALLOWED = {
    # The preset table (names, frame ranges, default sizes) fills the project form's dropdowns and bounds
    # (studio/ui/projects_tab.py, project_view.py). The registry is data only and `pipelines` loads its modules
    # lazily, so this import loads no model and no torch (test_pipelines_registry_loads_no_model below keeps it so).
    ("studio/ui", "pipelines.registry"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def is_allowed(relative: str, module: str, allowed) -> bool:
    return any(module == name and (relative == where or relative.startswith(where + "/")) for where, name in allowed)


def layer_violations(root: Path, rules=RULES, allowed=frozenset()) -> list[str]:
    """One line per import that breaks a rule: `file:line imports module (rule)`."""
    violations = []
    for rule in rules:
        for package in rule.packages:
            for path in sorted((root / package).rglob("*.py")):
                relative = path.relative_to(root).as_posix()
                if any(relative.startswith(folder + "/") for folder in rule.exempt):
                    continue
                for line, module in imported_modules(path, root):
                    if is_allowed(relative, module, allowed):
                        continue
                    if any(matches(module, prefix) for prefix in rule.forbidden):
                        violations.append(f"{relative}:{line} imports {module} ({rule.name})")
    return violations


def test_every_import_follows_the_layers():
    violations = layer_violations(ROOT, allowed=ALLOWED)
    assert not violations, "imports against the layers of docs/ARCHITECTURE.md:\n" + "\n".join(violations)


def test_every_allowed_crossing_still_exists():
    """An allow-list entry whose import is gone would silently allow it again later: remove the entry instead."""
    for where, module in ALLOWED:
        files = [ROOT / where] if where.endswith(".py") else sorted((ROOT / where).rglob("*.py"))
        imported = {name for path in files if path.exists() for _, name in imported_modules(path, ROOT)}
        assert module in imported, f"nothing in {where} imports {module} any more: remove it from ALLOWED"


def test_an_allowed_crossing_covers_only_its_own_folder(tmp_path):
    (tmp_path / "studio/ui").mkdir(parents=True)
    (tmp_path / "studio/uix").mkdir(parents=True)
    (tmp_path / "studio/ui/ok.py").write_text("from pipelines.registry import PRESETS\n")
    (tmp_path / "studio/uix/bad.py").write_text("import gradio\n")
    assert layer_violations(tmp_path, allowed=ALLOWED) == [
        "studio/uix/bad.py:1 imports gradio (only the UI imports gradio)"
    ]


def test_pipelines_registry_loads_no_model():
    code = "import sys, pipelines.registry; print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("pipelines/bad.py", "from studio.services import Services\n", "pipelines/bad.py:1 imports studio.services"),
        ("adapters/sub/bad.py", "def f():\n    import gradio\n", "adapters/sub/bad.py:2 imports gradio"),
        ("studio/services/bad.py", "from ..ui import app\n", "studio/services/bad.py:1 imports studio.ui"),
        ("studio/worker/bad.py", "import gradio as gr\n", "studio/worker/bad.py:1 imports gradio"),
        ("studio/characters/bad.py", "from studio.ui import panels\n", "studio/characters/bad.py:1 imports studio.ui"),
        ("studio/ui/bad.py", "from studio.db.models import Shot\n", "studio/ui/bad.py:1 imports studio.db.models"),
        ("studio/ui/bad.py", "from sqlalchemy import select\n", "studio/ui/bad.py:1 imports sqlalchemy"),
        ("studio/ui/bad.py", "import torch\n", "studio/ui/bad.py:1 imports torch"),
        ("studio/ui/bad.py", "from pipelines import MultiShotPipeline\n", "studio/ui/bad.py:1 imports pipelines"),
        ("studio/ui/sub/bad.py", "from ...db import engine\n", "studio/ui/sub/bad.py:1 imports studio.db"),
    ],
)
def test_the_check_finds_a_crossing(tmp_path, path, source, expected):
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(source)
    violations = layer_violations(tmp_path)
    assert len(violations) == 1 and violations[0].startswith(expected + " ("), violations


def test_the_check_lets_the_layers_import_downwards(tmp_path):
    sources = {
        "studio/ui/ok.py": "import gradio\nfrom studio.services.errors import ServiceError\nfrom . import panels\n",
        "studio/services/ok.py": "from sqlalchemy import select\nfrom studio.db import models\n",
        "studio/worker/ok.py": "import torch\nfrom pipelines import MultiShotPipeline\n",
        "pipelines/ok.py": "import diffusers\nfrom .layout import ShotLayout\n",
        "adapters/ok.py": "from pipelines.layout import ShotLayout\n",
    }
    for path, source in sources.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(source)
    assert layer_violations(tmp_path) == []
