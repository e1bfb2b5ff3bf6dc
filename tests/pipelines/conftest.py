"""Tiny Wan components (random weights, CPU) shared by the pipeline tests; 32x32 and 2 steps keep them fast."""

from __future__ import annotations

import pytest
import torch

HEIGHT = WIDTH = 32
STEPS = 2


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # The test machine's cores are shared; tiny models gain nothing from more threads.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_components():
    from pipelines.tiny import build_tiny_components

    return build_tiny_components()


@pytest.fixture
def pipe(tiny_components):
    from pipelines import MultiShotPipeline

    pipeline = MultiShotPipeline(**tiny_components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
