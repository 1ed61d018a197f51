import os

# Tests never reach a model hub: a missing weight download must fail fast, as on an offline box.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch


@pytest.fixture()
def small_model(torch):
    import aunet

    torch.manual_seed(0)
    return aunet.build_model("small")


@pytest.fixture(scope="session")
def astronaut():
    """A real face (RGB uint8, 512x512) shipped by scikit-image."""
    data = pytest.importorskip("skimage.data")
    return data.astronaut()
