"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' models are tiny: a second thread only adds OpenMP sync cost, which is
    large on a busy 2-core machine (measured ~1000x on a 30x32 @ 32x262 float64 matmul)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
