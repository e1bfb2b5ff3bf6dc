"""Exporting a studio project: the export_film job, export_project, the `export` / `bundle` CLI commands."""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
import opentimelineio as otio
import pytest
from PIL import Image

from studio.export import commands, run_export_job
from studio.export.film import ExportError
from studio.export.jobs import export_project
from studio.export.probe import probe_video, read_video_frames
from studio.services.job_specs import ExportFilm


def png(grey: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), grey, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def project(sqlite_services, solid_video):
    """Three 9-frame shots at 8 fps, 32x32: a cut, a 0.25 s dissolve into a trimmed shot (1 in, 2 out), a cut."""
    services = sqlite_services
    project = services.projects.create("Lighthouse", width=32, height=32, fps=8)
    scene = services.storyboard.add_scene(project.id, caption="a lighthouse")
    shots = [
        services.storyboard.add_shot(scene.id, "wide, the lighthouse", num_frames=9),
        services.storyboard.add_shot(
            scene.id,
            "close-up, the lamp",
            num_frames=9,
            transition="dissolve",
            transition_seconds=0.25,
            trim_in=1,
            trim_out=2,
        ),
        services.storyboard.add_shot(scene.id, "the sea at dawn", num_frames=9),
    ]
    for shot, grey in zip(shots, (40, 120, 200), strict=True):
        video = solid_video([grey] * 9).read_bytes()
        services.takes.add_take(shot.id, None, video, png(grey), None, seed=1, params={})
    return services, project, shots


class Recorder:
    def __init__(self, cancel_after: int | None = None):
        self.calls: list[tuple] = []
        self.cancel_after = cancel_after

    def report(self, fraction, message="", step=None, total=None, **_):
        self.calls.append((fraction, message, step, total))

    def should_cancel(self) -> bool:
        steps = [c[2] for c in self.calls if c[2] is not None]
        return self.cancel_after is not None and bool(steps) and steps[-1] >= self.cancel_after


def test_export_job_stores_film_and_timeline(project):
    services, project_view, shots = project
    # What a worker killed mid-export a day ago left behind is cleared; a running export's folder is not.
    scratch = services.settings.data_dir / "tmp"
    stale, fresh = scratch / "export-stale", scratch / "export-fresh"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "film.mp4").write_bytes(b"partial")
    os.utime(stale, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    job = services.jobs.enqueue(ExportFilm(), project_id=project_view.id)
    recorder = Recorder()
    result = run_export_job(services, job, recorder.report, recorder.should_cancel)
    # 9 + (9 - 1 - 2) + 9 frames, minus the 2-frame dissolve.
    assert (result["frames"], result["fps"], result["method"]) == (22, 8, "reencode")
    assert result["duration"] == pytest.approx(22 / 8)
    export = services.exports.get(result["export_id"])
    assert export.job_id == job.id and export.settings["clip_starts"] == [0, 7, 13]
    film = services.assets.path_of(export.video_asset_id)
    info = probe_video(film)
    assert (info.frames, info.fps, info.width, info.height, info.pix_fmt, info.audio_codec) == (
        22,
        8.0,
        32,
        32,
        "yuv420p",
        "aac",
    )
    levels = read_video_frames(film)[:, 16, 16, 0].astype(float)
    np.testing.assert_allclose(levels[:7], 40, atol=4)
    np.testing.assert_allclose(levels[7:9], [40 + 80 / 3, 40 + 160 / 3], atol=4)
    np.testing.assert_allclose(levels[9:13], 120, atol=4)
    # The timeline references the takes in the asset store with their trims.
    timeline = otio.adapters.read_from_string(services.assets.read_bytes(export.timeline_asset_id).decode())
    clips = list(timeline.tracks[0].find_clips())
    take_paths = [services.assets.path_of(services.takes.chosen_take(s.id).video_asset_id) for s in shots]
    assert [c.media_reference.target_url for c in clips] == [p.resolve().as_uri() for p in take_paths]
    assert clips[1].source_range.start_time.value == 1 + 1  # trim_in, then half of the dissolve
    assert timeline.tracks[0].duration().value == 22
    # Progress: every frame, in order, then done.
    steps = [c[2] for c in recorder.calls if c[2] is not None]
    assert steps == [*range(1, 23), 22] and recorder.calls[-1][0] == 1.0
    assert [p.name for p in scratch.iterdir()] == ["export-fresh"]


def test_shot_without_take_is_named_or_becomes_a_card(project):
    services, project_view, shots = project
    scene_id = shots[0].scene_id
    services.storyboard.add_shot(scene_id, "Mara looks out to sea", num_frames=5)
    job = services.jobs.enqueue(ExportFilm(), project_id=project_view.id)
    recorder = Recorder()
    with pytest.raises(ExportError, match=r"shot 4 \(scene 1, shot 4\): 'Mara looks out to sea' has no take"):
        run_export_job(services, job, recorder.report, recorder.should_cancel)
    assert services.exports.list(project_view.id) == []
    job = services.jobs.enqueue(ExportFilm(placeholder=True), project_id=project_view.id)
    result = run_export_job(services, job, recorder.report, recorder.should_cancel)
    assert result["frames"] == 22 + 5


def test_music_without_audio_is_refused_by_the_name_it_was_chosen_under(project):
    services, project_view, _ = project
    music = services.assets.put_bytes(b"these are lyrics, not a song", "music", "audio/mpeg", filename="lyrics.mp3")
    job = services.jobs.enqueue(ExportFilm(music_asset_id=music.id), project_id=project_view.id)
    with pytest.raises(ExportError) as refused:
        run_export_job(services, job, Recorder().report, lambda: False)
    assert str(refused.value).startswith("lyrics.mp3 has no audio ffmpeg can read; choose a music file")
    assert str(services.assets.path_of(music.id)) not in str(refused.value)
    assert services.exports.list(project_view.id) == []


def test_cancel_stops_the_render_and_stores_nothing(project):
    services, project_view, _ = project
    job = services.jobs.enqueue(ExportFilm(), project_id=project_view.id)
    recorder = Recorder(cancel_after=5)
    assert run_export_job(services, job, recorder.report, recorder.should_cancel) == {"cancelled": True}
    assert max(c[2] or 0 for c in recorder.calls) == 5
    assert services.exports.list(project_view.id) == []
    assert not list((services.settings.data_dir / "tmp").iterdir())


def test_export_job_can_also_write_the_film_where_asked(project, tmp_path):
    services, project_view, _ = project
    out = tmp_path / "render" / "film.mp4"
    job = services.jobs.enqueue(ExportFilm(out_path=str(out)), project_id=project_view.id)
    recorder = Recorder()
    result = run_export_job(services, job, recorder.report, recorder.should_cancel)
    export = services.exports.get(result["export_id"])
    assert out.read_bytes() == services.assets.read_bytes(export.video_asset_id)
    assert out.with_suffix(".otio").read_bytes() == services.assets.read_bytes(export.timeline_asset_id)
    assert sorted(p.name for p in out.parent.iterdir()) == ["film.mp4", "film.otio"]


def test_worker_dispatches_export_jobs_here(project):
    from studio.worker.context import JobContext
    from studio.worker.handlers import default_handlers

    services, project_view, _ = project
    services.jobs.enqueue(ExportFilm(), project_id=project_view.id)
    job = services.jobs.claim_next_job("test-worker", kinds=["export_film"])
    context = JobContext(services=services, job=job, worker_id="test-worker", progress_interval_s=0.0)
    result = default_handlers()["export_film"](context)
    assert result["frames"] == 22 and services.exports.get(result["export_id"]).job_id == job.id
    row = services.jobs.get(job.id)
    assert (row.status, row.step, row.total_steps, row.progress) == ("running", 22, 22, 1.0)


def test_export_project_writes_the_otio_beside_the_film(project, tmp_path):
    services, project_view, shots = project
    services.storyboard.update_shot(shots[1].id, transition="cut", transition_seconds=0.0, trim_in=0, trim_out=0)
    outcome = export_project(services, project_view.id, tmp_path / "out" / "film.mp4")
    assert outcome.result.method == "concat" and outcome.result.frames == 27
    assert outcome.timeline_path == tmp_path / "out" / "film.otio"
    assert otio.adapters.read_from_file(str(outcome.timeline_path)).tracks[0].duration().value == 27
    assert services.exports.list(project_view.id)[0].id == outcome.export.id


def run_cli(services, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args, services)


def test_cli_export_and_bundle(project, tmp_path, capsys):
    services, project_view, _ = project
    assert run_cli(services, ["export", "Lighthouse", "--out", str(tmp_path / "film.mp4")]) == 0
    out = capsys.readouterr().out
    assert "22 frames" in out and "reencode" in out and (tmp_path / "film.otio").is_file()
    assert probe_video(tmp_path / "film.mp4").frames == 22

    assert run_cli(services, ["export", "Nope", "--out", str(tmp_path / "x.mp4")]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert run_cli(services, ["export", "Lighthouse", "--out", str(tmp_path / "x.avi")]) == 1
    assert ".mp4" in capsys.readouterr().err

    assert run_cli(services, ["bundle", str(project_view.id), "--out", str(tmp_path / "p.zip")]) == 0
    assert run_cli(services, ["import-bundle", str(tmp_path / "p.zip"), "--name", "Copy"]) == 0
    copy = services.projects.get_by_name("Copy")
    assert [len(s.shots) for s in services.storyboard.list_scenes(copy.id)] == [3]
    assert len(services.exports.list(copy.id)) == 1
