"""The project's speed settings in the settings panel, in headless Chromium against the real app on SQLite."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def test_speed_settings_are_shown_saved_and_refused_with_a_message(page, studio):
    services, base = studio
    project = services.projects.create("Fast", preset="demo")
    services.projects.update_settings(project.id, acceleration={"step_cache": "taylorseer", "cache_interval": 4})
    page.goto(f"{base}/?project={project.id}")
    page.get_by_text("Speed and memory").click()
    page.wait_for_function("document.querySelector('#sl-speed-cache input').value === 'taylorseer'")
    assert page.locator("#sl-speed-n input").input_value() == "4"
    pick(page, "sl-speed-cache", "first-block")
    page.locator("#sl-speed-threshold input").fill("0.1")
    page.locator("#sl-speed-n input").fill("")
    pick(page, "sl-speed-vram", "fp8")
    page.locator("#sl-save-speed").click()
    page.wait_for_function("document.querySelector('#sl-status').innerText.includes('Speed settings saved')")
    assert services.projects.get(project.id).acceleration == {
        "step_cache": "first-block",
        "cache_threshold": 0.1,
        "vram_profile": "fp8",
    }
    page.locator("#sl-speed-threshold input").fill("7")
    page.locator("#sl-save-speed").click()
    page.get_by_text("cache_threshold must be between", exact=False).last.wait_for()
    assert services.projects.get(project.id).acceleration["cache_threshold"] == 0.1
    # An accelerator LoRA brings 4 steps at guidance 1, shown in the settings at once.
    page.locator("#sl-speed-threshold input").fill("0.1")
    page.locator("#sl-speed-accelerator textarea, #sl-speed-accelerator input").first.fill("lightx2v")
    page.locator("#sl-save-speed").click()
    page.wait_for_function("document.querySelector('#sl-set-steps input').value === '4'")
    saved = services.projects.get(project.id)
    assert (saved.acceleration["accelerator"], saved.steps, saved.guidance) == ("lightx2v", 4, 1.0)
