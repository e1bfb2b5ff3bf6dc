"""Server-drawn panels: every user string escaped, and the numbers a film-maker reads (scores, progress, ETA)."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

from studio.ui.panels import exports_html, format_scores, jobs_html, references_html, takes_html

HOSTILE = "<img src=x onerror=alert(1)> ${document.title} {{value}}"


def test_references_show_crop_or_the_flag_reason():
    now = datetime(2026, 1, 1)
    refs = [
        SimpleNamespace(
            id=1, asset_id=10, crop_asset_id=11, flags=(), analyzed_at=now, original_name=HOSTILE, caption=""
        ),
        SimpleNamespace(
            id=2, asset_id=20, crop_asset_id=None, flags=("no_face",), analyzed_at=now, original_name="b", caption=""
        ),
        SimpleNamespace(
            id=3, asset_id=30, crop_asset_id=None, flags=(), analyzed_at=None, original_name="c", caption=""
        ),
    ]
    html = references_html(refs)
    assert 'src="/studio/asset/11"' in html and 'src="/studio/asset/20"' in html
    assert "no face found" in html and "not analysed yet" in html
    assert "<img src=x" not in html and "${" not in html and "{{" not in html


def test_takes_side_by_side_with_seed_scores_and_choose():
    shot = SimpleNamespace(id=5, caption=HOSTILE, num_frames=17)
    takes = [
        SimpleNamespace(
            id=1,
            number=1,
            video_asset_id=7,
            thumbnail_asset_id=17,
            seed=42,
            identity_scores={"Mara": 0.61234},
            is_chosen=True,
            params={"caption": HOSTILE, "shot_caption": HOSTILE, "num_frames": 17},
        ),
        SimpleNamespace(
            id=2,
            number=2,
            video_asset_id=8,
            thumbnail_asset_id=18,
            seed=43,
            identity_scores={"Mara": "no face found"},
            is_chosen=False,
            params={"shot_caption": "an earlier caption", "num_frames": 13},
        ),
    ]
    html = takes_html(shot, takes, 3)
    assert "<b>Shot #3</b>" in html  # numbered as its card, not by database id
    # the older take says how it differs from the shot as the card now stands; the chosen one matches
    assert html.count('class="sl-flag"') == 1
    assert "take is 13 frames, the shot 17; take made from another caption" in html
    assert html.count("<video") == 2 and 'src="/studio/asset/8"' in html
    assert 'poster="/studio/asset/18"' in html  # the thumbnail, not a black box until played
    assert "seed 42" in html and "Mara 0.61" in html and "Mara no face found" in html
    assert html.count('data-action="choose_take"') == 1 and 'data-id="2"' in html
    assert "<img src=x" not in html and "${" not in html
    assert format_scores(None) == "identity: n/a"


def test_jobs_show_progress_eta_cancel_and_preview():
    job = SimpleNamespace(
        id=3,
        kind="generate_scene",
        status="running",
        progress=0.456,
        cancel_requested=False,
        is_finished=False,
        eta_s=125.0,
        error=None,
        message=HOSTILE,
        preview_asset_id=9,
    )
    done = SimpleNamespace(
        id=2,
        kind="export_film",
        status="done",
        progress=1.0,
        cancel_requested=False,
        is_finished=True,
        eta_s=None,
        error=None,
        message="exported 51 frames",
        preview_asset_id=9,
    )
    html = jobs_html([job, done])
    assert "46%" in html and "ETA 2:05" in html and "width:46%" in html
    assert html.count('data-action="cancel_job"') == 1 and html.count("preview") == 1
    assert "<img src=x" not in html


def test_exports_play_in_the_page_with_download_links():
    export = SimpleNamespace(
        id=4, video_asset_id=12, timeline_asset_id=13, settings={}, created_at=datetime(2026, 1, 1)
    )
    html = exports_html([export], project_name="The Lighthouse")
    assert "no music" in html  # how it was made, so two exports can be told apart
    export.settings = {"duration": 14.375, "width": 64, "height": 64, "music_asset_id": 3, "music_fade_seconds": 1.0}
    assert "14.4 s · 64×64 · music, fade-out 1 s" in exports_html([export])
    assert '<video controls preload="metadata" src="/studio/asset/12">' in html
    # saved under the film's name and the export's number in its project (its first: whatever its id), not as one
    # more film-4.mp4
    assert "/studio/asset/12?download=The-Lighthouse-1.mp4" in html and "<b>Export 1</b>" in html
    assert "/studio/asset/13?download=The-Lighthouse-1.otio" in html
    assert "download=film-1.mp4" in exports_html([export], project_name="///")  # nothing usable left in the name
    later = SimpleNamespace(
        id=9, video_asset_id=14, timeline_asset_id=None, settings={}, created_at=datetime(2026, 1, 2)
    )
    assert "<b>Export 2</b>" in exports_html([later, export]) and "download=film-2.mp4" in exports_html(
        [later, export]
    )
