from pathlib import Path

import pytest

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
