"""The film renderer: exact timeline arithmetic, pixel checks on tiny solid-colour takes, audio, fast path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from export_media import write_sine_wav

from studio.export.film import (
    ClipSpec,
    ExportCancelled,
    ExportError,
    ExportSettings,
    plan_film,
    render_film,
)
from studio.export.probe import VideoInfo, probe_video, read_audio_samples, read_video_frames

SETTINGS = ExportSettings(fps=8, width=32, height=32)
# Solid greys survive H.264 at crf 18 within a couple of levels.
TOLERANCE = 4


def fake_source(frames: int, fps: float = 8, width: int = 32, height: int = 32) -> VideoInfo:
    return VideoInfo(Path("take.mp4"), width, height, fps, frames, "h264", "yuv420p", False)


def grey(frames: np.ndarray) -> np.ndarray:
    """Mean grey level of each frame's centre, as float."""
    return frames[:, 12:20, 12:20, :].reshape(len(frames), -1).mean(axis=1)


def assert_audio_lasts_film(path: Path, duration: float) -> np.ndarray:
    info = probe_video(path)
    assert info.has_audio and info.audio_codec == "aac" and info.audio_rate == 44100
    samples = read_audio_samples(path)
    # AAC frames are 1024 samples; ffmpeg's edit list trims the padding, leave a few milliseconds for it.
    assert abs(len(samples) / 44100 - duration) < 0.01
    return samples


# ---------------------------------------------------------------------------------------------------- arithmetic


def test_plan_counts_cuts_dissolves_and_fades_exactly():
    sources = [fake_source(17), fake_source(17), fake_source(17), fake_source(17)]
    clips = [
        ClipSpec("a"),
        ClipSpec("b", transition="dissolve", transition_seconds=0.5),  # 4 frames overlap
        ClipSpec("c", transition="fade", transition_seconds=0.625),  # 5 frames: 2 out of b, 3 into c
        ClipSpec("d", transition="cut", transition_seconds=3.0),  # a cut ignores its seconds
    ]
    plan = plan_film(clips, SETTINGS, sources)
    assert plan.total_frames == 4 * 17 - 4
    assert plan.duration == pytest.approx((4 * 17 - 4) / 8)
    assert [clip.start for clip in plan.clips] == [0, 13, 30, 47]
    b, c = plan.clips[1], plan.clips[2]
    assert (b.dissolve_in, b.fade_out, c.fade_in, c.dissolve_out) == (4, 2, 3, 0)
    # Inside the dissolve two clips are seen with weights (k+1)/(D+1) that sum to one.
    for k in range(4):
        parts = plan.contributions(13 + k)
        assert [(clip.index, j) for clip, j, _ in parts] == [(0, 13 + k), (1, k)]
        assert parts[1][2] == pytest.approx((k + 1) / 5)
        assert sum(weight for _, _, weight in parts) == pytest.approx(1.0)
    # The fade: b's last two frames at gains 1/2, 0; c's first three at 0, 1/3, 2/3.
    gains = [plan.contributions(k)[0][2] for k in (28, 29, 30, 31, 32, 33)]
    assert gains == pytest.approx([0.5, 0, 0, 1 / 3, 2 / 3, 1])
    assert all(len(plan.contributions(k)) == 1 for k in range(17, plan.total_frames))


def test_plan_first_clip_fades_in_and_other_rates_are_resampled():
    clips = [ClipSpec("a", transition="dissolve", transition_seconds=0.25), ClipSpec("b", trim_in=4, trim_out=-13)]
    plan = plan_film(clips, SETTINGS, [fake_source(9), fake_source(33, fps=16)])  # -13 from 33 frames: 20
    first, second = plan.clips
    assert (first.fade_in, first.dissolve_in) == (2, 0)
    # 16 source frames at 16 fps are 8 frames at 8 fps, each the even source frame from trim_in on.
    assert second.frames == 8
    assert [second.source_index(j) for j in range(8)] == [4, 6, 8, 10, 12, 14, 16, 18]
    assert plan.total_frames == 17


def test_plan_refuses_what_cannot_be_made_with_the_shot_named():
    with pytest.raises(ExportError, match="shot 2.*lasts 4 frames.*need 6"):
        plan_film(
            [ClipSpec("a"), ClipSpec("b", transition="dissolve", transition_seconds=0.75, label="shot 2")],
            SETTINGS,
            [fake_source(17), fake_source(4)],
        )
    with pytest.raises(ExportError, match="shot 3 has no take"):
        plan_film([ClipSpec("a"), ClipSpec(None, label="shot 3")], SETTINGS, [fake_source(9), None])
    with pytest.raises(ExportError, match="trim"):
        plan_film([ClipSpec("a", trim_in=5, trim_out=12)], SETTINGS, [fake_source(9)])
    with pytest.raises(ExportError, match="even width and height"):
        plan_film([ClipSpec("a")], ExportSettings(fps=8, width=33, height=32), [fake_source(9)])
    with pytest.raises(ExportError, match="preset must be one of"):
        plan_film([ClipSpec("a")], ExportSettings(fps=8, width=32, height=32, preset="quick"), [fake_source(9)])
    not_music = Path(__file__)
    with pytest.raises(ExportError, match="no audio ffmpeg can read"):
        plan_film([ClipSpec("a")], ExportSettings(fps=8, width=32, height=32, music=not_music), [fake_source(9)])
    with pytest.raises(ExportError, match="transition must be one of"):
        plan_film([ClipSpec("a", transition="wipe")], SETTINGS, [fake_source(9)])


# ---------------------------------------------------------------------------------------------------- rendering


def test_cuts_take_the_concat_fast_path_frame_exact(solid_video, tmp_path):
    takes = [solid_video([40] * 9), solid_video([120] * 5), solid_video([200] * 7)]
    result = render_film([ClipSpec(take) for take in takes], tmp_path / "film.mp4", SETTINGS)
    assert result.method == "concat"
    assert (result.frames, result.fps, result.duration) == (21, 8, 21 / 8)
    info = probe_video(tmp_path / "film.mp4")
    assert (info.frames, info.fps, info.width, info.height, info.codec, info.pix_fmt) == (
        21,
        8.0,
        32,
        32,
        "h264",
        "yuv420p",
    )
    # Stream copy: the film's frames are the takes' decoded frames, bit for bit.
    expected = np.concatenate([read_video_frames(take) for take in takes])
    assert np.array_equal(read_video_frames(tmp_path / "film.mp4"), expected)
    samples = assert_audio_lasts_film(tmp_path / "film.mp4", 21 / 8)
    assert np.abs(samples).max() == 0.0
    assert not list(tmp_path.glob("*.partial.mp4"))


def test_takes_that_do_not_match_the_output_are_reencoded(solid_video, tmp_path):
    base = solid_video([40] * 5)
    assert (probe_video(base).profile, probe_video(solid_video([1], preset="medium")).profile) == (
        "Constrained Baseline",
        "High",
    )
    for other in (
        solid_video([200] * 5, preset="medium"),  # H.264 High instead of Constrained Baseline
        solid_video([200] * 5, crf=30),  # same profile and size, another PPS (initial QP)
        solid_video([200] * 5, fps=16),
        solid_video([200] * 5, width=48),
    ):
        result = render_film([ClipSpec(base), ClipSpec(other)], tmp_path / "film.mp4", SETTINGS)
        assert result.method == "reencode"
        assert probe_video(tmp_path / "film.mp4").frames == result.frames
    assert render_film([ClipSpec(base), ClipSpec(base)], tmp_path / "film.mp4", SETTINGS).method == "concat"


def test_cuts_reencoded_on_request_give_the_same_counts(solid_video, tmp_path):
    takes = [solid_video([40] * 9), solid_video([200] * 7)]
    settings = ExportSettings(fps=8, width=32, height=32, allow_fast_path=False)
    result = render_film([ClipSpec(take) for take in takes], tmp_path / "film.mp4", settings)
    assert result.method == "reencode"
    info = probe_video(tmp_path / "film.mp4")
    assert (info.frames, info.fps, info.codec, info.pix_fmt) == (16, 8.0, "h264", "yuv420p")
    np.testing.assert_allclose(grey(read_video_frames(tmp_path / "film.mp4")), [40] * 9 + [200] * 7, atol=TOLERANCE)
    assert_audio_lasts_film(tmp_path / "film.mp4", 2.0)


def test_dissolve_frames_are_blends_of_the_two_shots(solid_video, tmp_path):
    takes = [solid_video([40] * 8), solid_video([200] * 8)]
    clips = [ClipSpec(takes[0]), ClipSpec(takes[1], transition="dissolve", transition_seconds=3 / 8)]
    result = render_film(clips, tmp_path / "film.mp4", SETTINGS)
    assert result.method == "reencode"
    assert (result.frames, result.duration, result.clip_starts) == (13, 13 / 8, [0, 5])
    info = probe_video(tmp_path / "film.mp4")
    assert (info.frames, info.fps, info.pix_fmt) == (13, 8.0, "yuv420p")
    levels = grey(read_video_frames(tmp_path / "film.mp4"))
    blends = [40 + (200 - 40) * w for w in (0.25, 0.5, 0.75)]
    np.testing.assert_allclose(levels, [40] * 5 + blends + [200] * 5, atol=TOLERANCE)
    assert_audio_lasts_film(tmp_path / "film.mp4", 13 / 8)


def test_fade_goes_through_black_within_the_two_shots(solid_video, tmp_path):
    takes = [solid_video([160] * 8), solid_video([200] * 8)]
    clips = [ClipSpec(takes[0]), ClipSpec(takes[1], transition="fade", transition_seconds=0.75)]  # 6 frames
    result = render_film(clips, tmp_path / "film.mp4", SETTINGS)
    assert (result.frames, result.duration) == (16, 2.0)
    levels = grey(read_video_frames(tmp_path / "film.mp4"))
    out_gains = [2 / 3, 1 / 3, 0]
    in_gains = [0, 1 / 3, 2 / 3]
    expected = [160] * 5 + [160 * g for g in out_gains] + [200 * g for g in in_gains] + [200] * 5
    np.testing.assert_allclose(levels, expected, atol=TOLERANCE)
    assert probe_video(tmp_path / "film.mp4").frames == 16


def test_other_size_and_fps_are_normalised_and_trimmed(solid_video, tmp_path):
    # 16 fps, 16x8 take whose frame i has grey 10 * i: trimmed to [2, 14), it becomes 6 frames at 8 fps, scaled to
    # 32x16 and letterboxed on black inside 32x32.
    take = solid_video([10 * i for i in range(16)], width=16, height=8, fps=16)
    result = render_film([ClipSpec(take, trim_in=2, trim_out=14)], tmp_path / "film.mp4", SETTINGS)
    assert (result.method, result.frames) == ("reencode", 6)
    frames = read_video_frames(tmp_path / "film.mp4")
    assert frames.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(
        frames[:, 12:20, 4:28].reshape(6, -1).mean(axis=1), [20, 40, 60, 80, 100, 120], atol=TOLERANCE
    )
    assert frames[:, :6].max() <= TOLERANCE and frames[:, 26:].max() <= TOLERANCE


@pytest.mark.parametrize("music_seconds", [0.7, 5.0], ids=["looped", "trimmed"])
def test_music_is_looped_or_trimmed_to_the_film_and_faded_out(solid_video, tmp_path, music_seconds):
    music = write_sine_wav(tmp_path / "music.wav", seconds=music_seconds)
    takes = [solid_video([40] * 8), solid_video([200] * 8)]
    for clips, name, method in (
        ([ClipSpec(takes[0]), ClipSpec(takes[1])], "cuts.mp4", "concat"),
        (
            [ClipSpec(takes[0]), ClipSpec(takes[1], transition="dissolve", transition_seconds=0.25)],
            "dissolve.mp4",
            "reencode",
        ),
    ):
        settings = ExportSettings(fps=8, width=32, height=32, music=music, music_fade_seconds=0.5)
        result = render_film(clips, tmp_path / name, settings)
        assert result.method == method
        samples = assert_audio_lasts_film(tmp_path / name, result.duration)

        def loudness(at: float, samples: np.ndarray = samples) -> float:
            return float(np.abs(samples[int(at * 44100) : int(at * 44100) + 2000]).max())

        # Still playing after 0.7 s (looped when the file is that short); faded: the last 50 ms are far quieter.
        assert loudness(0.2) > 0.2 and loudness(1.0) > 0.2
        assert loudness(result.duration - 0.05) < 0.25 * loudness(0.2)


def test_missing_take_becomes_a_placeholder_card_when_asked(solid_video, tmp_path):
    take = solid_video([200] * 8)
    clips = [ClipSpec(take), ClipSpec(None, label="shot 2", placeholder_frames=6)]
    with pytest.raises(ExportError, match="shot 2 has no take"):
        render_film(clips, tmp_path / "film.mp4", SETTINGS)
    assert not (tmp_path / "film.mp4").exists()
    settings = ExportSettings(fps=8, width=32, height=32, placeholder=True)
    result = render_film(clips, tmp_path / "film.mp4", settings)
    assert (result.method, result.frames) == ("reencode", 14)
    frames = read_video_frames(tmp_path / "film.mp4")
    assert len(frames) == 14
    # The card is dark grey (48) with light text: far from the take's 200.
    assert np.median(frames[8:]) == pytest.approx(48, abs=TOLERANCE)


def test_progress_reaches_every_frame_and_cancel_leaves_nothing(solid_video, tmp_path):
    takes = [solid_video([40] * 8), solid_video([200] * 8)]
    clips = [ClipSpec(takes[0]), ClipSpec(takes[1], transition="dissolve", transition_seconds=0.25)]
    seen: list[tuple[int, int]] = []
    render_film(clips, tmp_path / "film.mp4", SETTINGS, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (14, 14) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len(seen) == 14

    def cancel_at_five(done: int, total: int) -> None:
        if done >= 5:
            raise ExportCancelled()

    with pytest.raises(ExportCancelled):
        render_film(clips, tmp_path / "cancelled.mp4", SETTINGS, progress=cancel_at_five)
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix == ".mp4") == [
        "film.mp4",
        "take_0.mp4",
        "take_1.mp4",
    ]
