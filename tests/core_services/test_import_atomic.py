"""A storyboard import is one transaction: an error on any item leaves the database and the asset store as they
were, for a new project and for an existing one being synced. Built on re-entrant units of work."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from studio.db import models
from studio.db.engine import ON_ROLLBACK
from studio.services.errors import ValidationError
from studio.storyboard_file import StoryboardError, import_storyboard, load_storyboard

EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples"
EXAMPLE = EXAMPLES / "lighthouse.yaml"


def _snapshot(services) -> dict:
    """Every table's rows and every file under the data folder: what 'as it was' means."""
    state: dict = {}
    with services.db.unit_of_work(read_only=True) as session:
        for table in models.Base.metadata.sorted_tables:
            rows = session.execute(select(table).order_by(*table.primary_key.columns)).all()
            state[table.name] = [tuple(row) for row in rows]
    data_dir = Path(services.settings.data_dir)
    state["files"] = sorted(
        str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("studio.db")
    )
    return state


def _fail_on_shot(monkeypatch, services, number: int) -> None:
    """The storyboard service refuses the `number`-th new shot of an import (`apply_plan` builds each one)."""
    original = services.storyboard._planned_shot
    calls = {"n": 0}

    def planned_shot(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            raise ValidationError("this shot is refused (test)")
        return original(*args, **kwargs)

    monkeypatch.setattr(services.storyboard, "_planned_shot", planned_shot)


def test_nested_units_commit_once_at_the_outermost(services):
    with services.db.unit_of_work() as outer:
        project = services.projects.create("Nested", preset="demo")
        with services.db.unit_of_work() as inner:
            assert inner is outer
        # Another connection does not see the project before the outer unit commits.
        other = services.db.session_factory()
        try:
            seen = other.scalar(
                select(func.count()).select_from(models.Project).where(models.Project.id == project.id)
            )
        finally:
            other.close()
        assert seen == 0
    assert services.projects.find("Nested").id == project.id


def test_an_error_in_a_nested_unit_rolls_back_the_outer_and_its_callbacks_run_once(services):
    calls = []
    with pytest.raises(RuntimeError, match="boom"):
        with services.db.unit_of_work() as session:
            services.projects.create("Doomed", preset="demo")
            session.info.setdefault(ON_ROLLBACK, []).append(lambda: calls.append("rolled back"))
            with services.db.unit_of_work() as inner:
                inner.info.setdefault(ON_ROLLBACK, []).append(lambda: calls.append("inner rolled back"))
                raise RuntimeError("boom")
    assert calls == ["inner rolled back", "rolled back"]  # each once: the inner one at its savepoint
    assert [p.name for p in services.projects.list()] == []


def test_a_read_only_unit_joins_a_writing_one_but_not_the_other_way(services):
    with services.db.unit_of_work():
        project = services.projects.create("Joined", preset="demo")
        assert services.projects.get(project.id).name == "Joined"  # a read-only unit sees the uncommitted row
    with services.db.unit_of_work(read_only=True):
        with pytest.raises(RuntimeError, match="inside a read-only one"):
            services.projects.create("Refused", preset="demo")
    assert [p.name for p in services.projects.list()] == ["Joined"]


def test_a_failed_nested_unit_undoes_its_own_writes_and_files_even_when_the_caller_goes_on(services):
    """A writing unit inside another runs in a savepoint: a caller that catches its error commits the rest only."""
    png = (EXAMPLES / "refs" / "mara_1.png").read_bytes()
    before_files = _snapshot(services)["files"]
    with services.db.unit_of_work() as session:
        project = services.projects.create("Kept", preset="demo")
        with pytest.raises(ValidationError):
            with services.db.unit_of_work() as inner:
                services.assets.add_bytes(inner, png, "reference", "image/png", "mara_1.png")
                services.projects.create("Undone", preset="demo")
                raise ValidationError("refused after writing (test)")
        assert session.info.get(ON_ROLLBACK, []) == []  # the failed unit's callbacks ran and are gone
    assert [p.name for p in services.projects.list()] == ["Kept"]
    assert services.projects.get(project.id).name == "Kept"
    after = _snapshot(services)
    assert after["assets"] == [] and after["files"] == before_files  # the savepoint's new file was removed


def test_another_thread_never_joins_the_open_unit(services):
    """Even with the context copied (asyncio.to_thread does), another thread gets its own session."""
    with services.db.unit_of_work():
        services.projects.create("Private", preset="demo")
        context = contextvars.copy_context()
        with ThreadPoolExecutor(max_workers=1) as pool:
            seen = pool.submit(context.run, lambda: [p.name for p in services.projects.list()]).result(timeout=30)
        assert seen == []  # its own transaction: the uncommitted project is not there
    assert [p.name for p in services.projects.list()] == ["Private"]


def test_failed_import_of_a_new_project_leaves_nothing(services, monkeypatch):
    before = _snapshot(services)
    _fail_on_shot(monkeypatch, services, 3)
    doc = load_storyboard(EXAMPLE)
    with pytest.raises(StoryboardError, match="this shot is refused") as error:
        import_storyboard(services, doc, EXAMPLES)
    third = doc.scenes[1].shots[0]
    assert (error.value.line, error.value.field) == (third.line, "scenes[1].shots[0]")
    assert f"lighthouse.yaml line {third.line}, scenes[1].shots[0]" in str(error.value)
    assert _snapshot(services) == before  # no project, characters, reference files, scenes or shots


def test_failed_resync_of_an_existing_project_keeps_it_as_it_was(services, monkeypatch, tmp_path):
    import_storyboard(services, load_storyboard(EXAMPLE), EXAMPLES)
    before = _snapshot(services)
    text = EXAMPLE.read_text()
    changed = text.replace("close-up, Mara lights the lamp", "close-up, Mara lights the great lamp")
    changed += "      - caption: one more shot\n        frames: 17\n"
    storyboard = tmp_path / "lighthouse.yaml"
    storyboard.write_text(changed)
    for ref in (EXAMPLES / "refs").iterdir():
        (tmp_path / "refs").mkdir(exist_ok=True)
        (tmp_path / "refs" / ref.name).write_bytes(ref.read_bytes())
    _fail_on_shot(monkeypatch, services, 1)  # the caption change is made, then the new shot is refused
    with pytest.raises(StoryboardError, match="this shot is refused"):
        import_storyboard(services, load_storyboard(storyboard), tmp_path)
    assert _snapshot(services) == before
    monkeypatch.undo()
    report = import_storyboard(services, load_storyboard(storyboard), tmp_path)  # fixed: it goes through
    assert report.shots_created == 1 and report.shots_updated == 1
