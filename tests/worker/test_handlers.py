"""The worker's handler table: one direct handler per job kind, the area handlers get the context's parts, and a
missing feature module is an import error when the worker starts."""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

import pytest

from studio.db.models import JOB_KINDS
from studio.worker import handlers


def test_every_job_kind_has_its_handler():
    assert set(handlers.HANDLERS) == set(JOB_KINDS)
    assert handlers.HANDLERS["generate_scene"].__module__ == "studio.worker.generation"
    assert handlers.HANDLERS["regenerate_shot"].__module__ == "studio.worker.generation"
    table = handlers.default_handlers()
    table["export_film"] = None  # a worker's own table is a copy
    assert handlers.HANDLERS["export_film"] is handlers.export_film


def test_area_handlers_get_the_context_and_the_warm_pipelines(monkeypatch):
    calls = []

    def fake_train(services, job, report_progress, should_cancel, pipelines=None):
        calls.append(("train", services, job, report_progress, should_cancel, pipelines))
        return None

    def fake_export(services, job, report_progress, should_cancel):
        calls.append(("export", services, job, report_progress, should_cancel))
        return {"export_id": 7}

    monkeypatch.setattr(handlers, "run_train_adapter", fake_train)
    monkeypatch.setattr(handlers, "run_export_job", fake_export)
    ctx = SimpleNamespace(services="S", job="J", report_progress="P", should_cancel="C", pipelines="cache")
    assert handlers.HANDLERS["train_adapter"](ctx) == {}
    assert handlers.HANDLERS["export_film"](ctx) == {"export_id": 7}
    assert calls == [("train", "S", "J", "P", "C", "cache"), ("export", "S", "J", "P", "C")]


@pytest.mark.parametrize("missing", ["studio.export.jobs", "studio.characters.training", "studio.worker.generation"])
def test_a_missing_area_module_stops_the_import(monkeypatch, missing):
    monkeypatch.delitem(sys.modules, "studio.worker.handlers")
    monkeypatch.setitem(sys.modules, missing, None)  # as if the module could not be imported
    with pytest.raises(ImportError, match=missing.replace(".", r"\.")):
        importlib.import_module("studio.worker.handlers")
