import zipfile

import numpy as np
import pytest

from lvas.data.vocab import Vocabulary, tokenize
from lvas.models.text.glove import load_glove

LINES = [
    "the " + " ".join(["0.1"] * 4),
    "cat " + " ".join(["0.5", "-0.5", "1", "2"]),
    ". . . " + " ".join(["9"] * 4),  # glove.840B has tokens with spaces
    "jumping " + " ".join(["-1", "-2", "-3", "-4"]),
]


def test_glove_txt_and_zip_keep_only_the_vocabulary(tmp_path):
    txt = tmp_path / "glove.tiny.4d.txt"
    txt.write_text("\n".join(LINES) + "\n")
    with zipfile.ZipFile(tmp_path / "glove.tiny.zip", "w") as zf:
        zf.write(txt, "glove.tiny.4d.txt")
    vocab = Vocabulary(["cat", "jumping", "dog"])
    for path in (txt, tmp_path / "glove.tiny.zip"):
        mat, found = load_glove(path, vocab.itos, dim=4, cache_dir=tmp_path / f"cache_{path.suffix[1:]}")
        assert mat.shape == (5, 4) and found == 2
        assert np.array_equal(mat[vocab.stoi["cat"]], [0.5, -0.5, 1, 2])
        assert np.array_equal(mat[vocab.stoi["jumping"]], [-1, -2, -3, -4])
        assert np.array_equal(mat[0], np.zeros(4))  # padding
        assert np.abs(mat[vocab.stoi["dog"]]).sum() > 0  # not in GloVe: small random vector


def test_glove_cache_is_reused(tmp_path):
    txt = tmp_path / "g.txt"
    txt.write_text("\n".join(LINES) + "\n")
    words = Vocabulary(["cat"]).itos
    first, _ = load_glove(txt, words, dim=4, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").glob("glove_*.npy"))) == 1
    txt.write_text("cat " + " ".join(["7"] * 4) + "\n")  # changed file content, same path
    second, found = load_glove(txt, words, dim=4, cache_dir=tmp_path / "c")
    assert np.array_equal(first, second) and found == 1


def test_glove_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_glove(tmp_path / "missing.txt", ["<pad>"], dim=4)
    bad = tmp_path / "bad.txt"
    bad.write_text("cat 1 2\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected a word and 4 numbers"):
        load_glove(bad, ["<pad>", "cat"], dim=4)


def test_tokenize_and_encode():
    assert tokenize("A white-and-brown CAT is jumping!") == ["a", "white", "and", "brown", "cat", "is", "jumping"]
    v = Vocabulary.build(["a cat", "a dog", "the cat"])
    assert v.itos[:4] == ["<pad>", "<unk>", "a", "cat"]
    ids, mask = v.encode("A cat and a zebra " + "x " * 30, max_words=20)
    assert ids.shape == (20,) and mask.sum() == 20
    assert ids[:3].tolist() == [v.stoi["a"], v.stoi["cat"], 1]
    ids, mask = v.encode("", max_words=5)
    assert mask.tolist() == [True, False, False, False, False] and ids[0] == 1


def test_released_tokenizer_keeps_punctuation_as_tokens():
    from lvas.data.vocab import tokenize_released

    assert tokenize_released("A man's red car, moving.") == ["a", "man", "'", "s", "red", "car", ", ", "moving"]
    assert tokenize_released("  two   dogs  ") == ["two", "   ", "dogs"]  # runs of spaces are tokens too
    v = Vocabulary.build(["the man, running."], tokenizer="released")
    ids, mask = v.encode("the man, running.", 20)
    assert [v.itos[i] for i in ids[: int(mask.sum())]] == ["the", "man", ", ", "running"]
    assert Vocabulary.build(["the man, running."]).encode("the man, running.", 20)[1].sum() == 3  # words only


def test_a_fixed_table_covers_new_words_without_moving_old_ids():
    from lvas.data.vocab import with_words_of

    v = Vocabulary.build(["the red circle"], tokenizer="released")
    w = with_words_of(v, ["the blue circle, jumping"])
    assert w.itos[: len(v)] == v.itos and w.tokenizer == "released"
    assert set(w.itos[len(v):]) == {"blue", ", ", "jumping"}
