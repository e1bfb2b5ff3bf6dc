"""Training helpers of the demo model: per-shot noise levels and scenes composed from the shot pool."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from training.train_demo import FLOW_SHIFT, SceneComposer, sample_sigmas, shifted
from training.world import CHARACTER_BY_NAME, global_caption, sample_shot


def test_sigmas_are_shifted_and_clean_shots_carry_no_loss():
    rng = torch.Generator().manual_seed(0)
    sig, mask = sample_sigmas(rng, 512, 3)
    assert sig.shape == mask.shape == (512, 3)
    assert ((sig >= 0) & (sig < 1)).all()
    clean = sig == 0
    assert torch.equal(clean, mask == 0)  # a shot has no loss exactly when it is kept clean (context)
    assert not clean.all(dim=1).any()  # never a scene without a noisy shot
    shared = (sig[:, :1] == sig).all(dim=1) & ~clean.any(dim=1)
    assert 0.35 < shared.float().mean() < 0.65  # about half the scenes: one level for every shot (generation)
    assert 0.1 < clean.any(dim=1).float().mean() < 0.3  # some scenes train context regeneration
    assert shifted(torch.tensor(0.5)).item() == FLOW_SHIFT * 0.5 / (1 + (FLOW_SHIFT - 1) * 0.5)


def test_composed_scenes_keep_one_location_and_put_both_cast_members_on_screen():
    rng = np.random.default_rng(0)
    labels = [sample_shot(rng) for _ in range(300)]
    cache = {"latents": [torch.randn(16, 5, 8, 8).half() for _ in labels], "labels": [asdict(x) for x in labels]}
    stats = {"latents_mean": [0.0] * 16, "latents_std": [1.0] * 16}
    composer = SceneComposer(cache, stats, {})
    texts = composer.texts()
    composer.text = {t: torch.full((3 if t.startswith("a scene") else 2, 4), float(len(t))) for t in texts}
    gen = torch.Generator().manual_seed(1)
    for k in (2, 3, 4):
        for _ in range(20):
            shots, caption = composer.scene(k, gen)
            chosen = [composer.labels[i] for i in shots]
            assert len({s.location for s in chosen}) == 1
            names = {s.character for s in chosen}
            assert len(names) == 2 and all(CHARACTER_BY_NAME[n] for n in names)
            assert caption in {
                global_caption(chosen[0].location, list(p)) for p in (sorted(names), sorted(names)[::-1])
            }
            assert caption in texts
        x0, text = composer.batch(k, 3, gen)
        assert x0.shape == (3, 16, 5 * k, 8, 8)
        assert text.shape == (3, 3 + 2 * k, 4)
