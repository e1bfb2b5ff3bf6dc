from __future__ import annotations

import pytest
import torch

from pipelines.tiny import build_tiny_components


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Two CPU cores are shared by every engineer's tests: tiny models gain nothing from more threads.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def components():
    return build_tiny_components()
