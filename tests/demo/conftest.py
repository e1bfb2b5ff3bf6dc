"""Shared by the demo-model tests: the shipped pipeline, loaded once (tests that render with it only read it)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def demo_pipe():
    import torch

    from eval.evaluate_demo import load_demo_pipeline

    torch.set_num_threads(1)
    return load_demo_pipeline()
