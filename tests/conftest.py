import os
from pathlib import Path

# One thread per process: the suite's tensors are small, and on a shared 2-core machine torch's
# spinning worker threads slow every test down many times over. Subprocesses inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
NAMES = REPO.parent / "shared" / "data" / "names.txt"


@pytest.fixture
def names_path():
    """The lecture's names.txt, which lives beside the repo in shared/data and is never committed."""
    if not NAMES.exists():
        pytest.skip("the lecture's names.txt is not at ../shared/data/names.txt beside the repo")
    return NAMES


@pytest.fixture(scope="session")
def small_words(tmp_path_factory):
    """A small word file cut from the default corpus, so training tests run in seconds."""
    from ninjagrad.data import load_babynames

    path = tmp_path_factory.mktemp("data") / "words.txt"
    path.write_text("\n".join(load_babynames(2017)[::15]) + "\n", encoding="utf-8")
    return path


def pytest_collection_modifyitems(config, items):
    """A test that starts a real browser (the `browser` fixture of test_html.py) is slow: Chromium's start-up and
    pages rendered for real cost seconds each, so the quick tier leaves them to the full suite."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
