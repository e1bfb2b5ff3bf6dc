"""Pipeline cache: one base model at a time, keyed by (preset, dtype, adapters); adapters swap without a reload."""

from __future__ import annotations

import torch

from studio.worker.cache import PipelineCache


class FakePipe:
    def __init__(self, preset):
        self.preset = preset
        self.adapters = ()


def make_cache():
    loads, swaps = [], []

    def loader(preset, device, dtype, offload, vae_tiling, model_root):
        loads.append(preset)
        return FakePipe(preset)

    def adapter_loader(pipe, adapters, context):
        swaps.append(adapters)
        pipe.adapters = adapters

    cache = PipelineCache(torch.device("cpu"), torch.float32, loader=loader, adapter_loader=adapter_loader)
    return cache, loads, swaps


def test_same_key_is_a_hit_and_adapters_swap_on_the_loaded_model():
    cache, loads, swaps = make_cache()
    first = cache.get("tiny")
    assert cache.get("tiny") is first
    with_mara = cache.get("tiny", ((3, 1),))
    assert with_mara is first and first.adapters == ((3, 1),)
    assert cache.key == ("tiny", "fp32", ((3, 1),))
    assert loads == ["tiny"] and swaps == [((3, 1),)]
    assert (cache.stats.hits, cache.stats.loads, cache.stats.adapter_swaps) == (1, 1, 1)


def test_a_new_preset_drops_the_old_model_before_loading():
    cache, loads, swaps = make_cache()
    tiny = cache.get("tiny")
    demo = cache.get("demo", ((1, 2),))
    assert demo is not tiny and demo.adapters == ((1, 2),)
    assert loads == ["tiny", "demo"]
    cache.clear()
    assert cache.key is None
    assert cache.get("demo", ((1, 2),)) is not demo  # cleared: loaded again
