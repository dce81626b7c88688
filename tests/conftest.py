"""Session-wide fixtures: a tiny synthetic SALICON folder and the shared MIT1003 sample."""

from pathlib import Path

import pytest

from datasets.synthetic import generate_synthetic_salicon

MIT1003_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mit1003_sample"


@pytest.fixture(scope="session", autouse=True)
def weights_cache_in_a_temporary_folder(tmp_path_factory):
    """Backbone weights converted by any test go to a session folder (SALIENCY_KD_CACHE), never ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("SALIENCY_KD_CACHE", str(tmp_path_factory.mktemp("weights_cache")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def synthetic_salicon_dir(tmp_path_factory):
    """A 2017-layout SALICON folder: 8 train, 4 val, 2 test images of 48x64, seed 0 (treat as read-only)."""
    root = tmp_path_factory.mktemp("synthetic_salicon")
    generate_synthetic_salicon(root, n_train=8, n_val=4, n_test=2, image_size=(48, 64), seed=0)
    return root


@pytest.fixture(scope="session")
def mit1003_sample_dir():
    """The ten real MIT1003 images with maps in ../shared/data/mit1003_sample; skips when absent."""
    if not (MIT1003_SAMPLE / "stimuli").is_dir():
        pytest.skip(f"MIT1003 sample not found at {MIT1003_SAMPLE} (only present in the project workspace)")
    return MIT1003_SAMPLE
