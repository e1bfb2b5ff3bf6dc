"""The OpenTimelineIO file reads back (with OTIO and its own tools) as the same edit as the MP4."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import opentimelineio as otio
import pytest
from export_media import write_sine_wav

from studio.export.film import ClipSpec, ExportError, ExportSettings, plan_film
from studio.export.timeline import clips_from_timeline, write_timeline


@pytest.fixture
def edit(solid_video, tmp_path):
    takes = [solid_video([40] * 9), solid_video([200] * 8), solid_video([100] * 12)]
    clips = [
        ClipSpec(takes[0], label="shot 1"),
        ClipSpec(takes[1], transition="dissolve", transition_seconds=3 / 8, label="shot 2"),
        ClipSpec(takes[2], trim_in=2, trim_out=10, transition="fade", transition_seconds=0.5, label="shot 3"),
        ClipSpec(None, label="shot 4", placeholder_frames=5),
    ]
    music = write_sine_wav(tmp_path / "music.wav", seconds=1.0)
    settings = ExportSettings(fps=8, width=32, height=32, music=music, music_fade_seconds=0.5, placeholder=True)
    return takes, clips, settings, music


def test_timeline_reads_back_with_the_same_clips_and_durations(edit, tmp_path):
    takes, clips, settings, music = edit
    plan = plan_film(clips, settings)
    assert plan.total_frames == 9 + 8 + 8 + 5 - 3
    path = write_timeline(clips, tmp_path / "film.otio", settings, name="The Lighthouse")
    timeline = otio.adapters.read_from_file(str(path))
    assert timeline.name == "The Lighthouse"
    video, music_track = timeline.tracks
    assert video.kind == otio.schema.TrackKind.Video and music_track.kind == otio.schema.TrackKind.Audio
    assert video.duration() == otio.opentime.RationalTime(27, 8)
    assert music_track.duration().to_frames() == 27

    items = list(video)
    assert [type(item).__name__ for item in items] == ["Clip", "Transition", "Clip", "Transition", "Clip", "Clip"]
    shot1, dissolve, shot2, fade, shot3, shot4 = items
    assert [clip.name for clip in (shot1, shot2, shot3, shot4)] == ["shot 1", "shot 2", "shot 3", "shot 4"]
    # A 3-frame dissolve centred on the cut: 1 frame before it (from shot 2's head), 2 after (from shot 1's tail).
    assert dissolve.transition_type == otio.schema.TransitionTypes.SMPTE_Dissolve
    assert (dissolve.in_offset.value, dissolve.out_offset.value) == (1, 2)
    assert fade.name == "fade_through_black" and fade.metadata["shotline"]["fade_out_frames"] == 2
    assert fade.metadata["shotline"]["fade_in_frames"] == 2  # 0.5 s = 4 frames, half each side
    # Visible ranges on the track, and the part of each take they show.
    assert [clip.range_in_parent().start_time.value for clip in (shot1, shot2, shot3, shot4)] == [0, 7, 14, 22]
    assert [clip.duration().value for clip in (shot1, shot2, shot3, shot4)] == [7, 7, 8, 5]
    assert (shot2.source_range.start_time.value, shot3.source_range.start_time.value) == (1, 2)
    # Handles cover the dissolve: shot 1 has 2 frames after its range, shot 2 one before.
    available = shot1.media_reference.available_range
    assert available.duration.value - shot1.source_range.end_time_exclusive().value == 2
    for clip, take in zip((shot1, shot2, shot3), takes, strict=True):
        assert Path(clip.media_reference.target_url.removeprefix("file://")) == take.resolve()
    assert isinstance(shot4.media_reference, otio.schema.MissingReference)

    # Music (1 s = 8 frames) repeats to fill 27 frames and fades out at the end.
    assert [clip.duration().value for clip in music_track] == pytest.approx([8, 8, 8, 3])
    assert music_track[-1].effects[0].effect_name == "AudioFadeOut"
    assert music_track[0].media_reference.target_url == music.resolve().as_uri()


def test_clips_from_timeline_rebuild_the_same_film(edit, tmp_path):
    _, clips, settings, _ = edit
    path = write_timeline(clips, tmp_path / "film.otio", settings)
    rebuilt = clips_from_timeline(path)
    original, again = plan_film(clips, settings), plan_film(rebuilt, settings)
    assert again.total_frames == original.total_frames
    assert [(c.start, c.frames, c.source_first, c.dissolve_in, c.fade_in, c.fade_out) for c in again.clips] == [
        (c.start, c.frames, c.source_first, c.dissolve_in, c.fade_in, c.fade_out) for c in original.clips
    ]


def test_otio_tools_open_the_file(edit, tmp_path):
    _, clips, settings, _ = edit
    path = write_timeline(clips, tmp_path / "film.otio", settings)
    otiostat = Path(sys.executable).parent / "otiostat"
    completed = subprocess.run([str(otiostat), str(path)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "parsed: True" in completed.stdout
    assert "number of clips: 8" in completed.stdout
    assert "total duration: RationalTime(27, 8)" in completed.stdout


def test_timeline_path_must_be_otio(edit, tmp_path):
    _, clips, settings, _ = edit
    with pytest.raises(ExportError, match=r"\.otio"):
        write_timeline(clips, tmp_path / "film.json", settings)
