import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ninjagrad.data import Vocab, build_dataset, load_babynames, load_words, make_splits
from ninjagrad.errors import UsageError


@pytest.mark.names
def test_lecture_split_shapes(names_path):
    splits = make_splits(load_words(names_path), block_size=3)
    assert tuple(splits.Xtr.shape) == (182625, 3)
    assert tuple(splits.Xdev.shape) == (22655, 3)
    assert tuple(splits.Xte.shape) == (22866, 3)
    assert len(splits.vocab) == 27 and splits.vocab.itos[0] == "." and splits.vocab.itos[1] == "a"


def test_windows_of_one_word():
    vocab = Vocab.from_words(["emma"])
    X, Y = build_dataset(["emma"], 3, vocab)
    s = vocab.stoi
    e, m, a = s["e"], s["m"], s["a"]
    assert X.tolist() == [[0, 0, 0], [0, 0, e], [0, e, m], [e, m, m], [m, m, a]]
    assert Y.tolist() == [s["e"], s["m"], s["m"], s["a"], 0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="ab\u00e9\u4e00z", max_size=6), max_size=12), st.integers(1, 5))
def test_windows_are_the_lectures_loop(words, block_size):
    """The vectorised windows equal the lecture's loop over every character of every word."""
    vocab = Vocab.from_words(words)
    X, Y = build_dataset(words, block_size, vocab)
    rows, targets = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            rows.append(context)
            targets.append(vocab.stoi[ch])
            context = context[1:] + [vocab.stoi[ch]]
    assert X.tolist() == rows and Y.tolist() == targets and X.shape == (len(rows), block_size)


def test_default_corpus_is_lowercase_distinct_names():
    words = load_babynames(2017)
    assert words[:3] == ["emma", "olivia", "ava"]  # the package's order: girls by count first
    assert len(words) == len(set(words)) == 29910
    assert all(w.isalpha() and w.islower() for w in words)


def test_default_corpus_year_out_of_range():
    with pytest.raises(UsageError, match="covers"):
        load_babynames(1700)


@pytest.mark.parametrize("content, message", [
    (b"", "no words"),
    (b"\n  \n", "no words"),
    (b"anna\nbob smith\n", ":2: whitespace inside"),
    (b"anna\nbo\x07b\n", ":2: control character"),
    (b"anna\n\xff\xfe\x00\n", ":2: not UTF-8"),
    (b"anna\nj.r\n", ":2: .* reserves"),
])
def test_bad_word_files(tmp_path, content, message):
    path = tmp_path / "words.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as e:
        load_words(path)
    assert str(path) in str(e.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_words(tmp_path / "nope.txt")
    with pytest.raises(UsageError, match="is a directory"):
        load_words(tmp_path)


def test_good_file_with_crlf_bom_and_blank_lines(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes("\ufeffanna\r\n\r\n  zoé \r\n".encode("utf-8"))
    assert load_words(path) == ["anna", "zoé"]


def test_too_small_to_split():
    with pytest.raises(UsageError, match="too few"):
        make_splits(["ab", "cd", "ef"], 3)
    splits = make_splits([f"w{'abcdefghij'[i]}" for i in range(10)], 2)
    assert splits.Xtr.shape[0] > 0 and splits.Xdev.shape[0] > 0 and splits.Xte.shape[0] > 0
