"""BERT WordPiece steps on a small hand-made vocabulary, without a model."""

from __future__ import annotations

import pytest

from enclave.embeddings.wordpiece import WordPieceVocabulary, normalize_uncased, split_words

CLS, SEP, UNK, MASK = 101, 102, 100, 103


@pytest.fixture
def vocabulary() -> WordPieceVocabulary:
    return WordPieceVocabulary(
        word_start={"un": 1, "unaff": 2, "play": 3, "!": 4, "北": 5, "cafe": 6, "a": 7},
        continuation={"able": 10, "aff": 11, "ordable": 12, "s": 13},
        special={"[CLS]": CLS, "[SEP]": SEP, "[UNK]": UNK, "[MASK]": MASK},
        unk_id=UNK,
        cls_id=CLS,
        sep_id=SEP,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ünaffordable", "unaffordable"),
        ("a\x0cb", "ab"),  # form feed is a control character, deleted
        ("tab\there", "tab here"),
        ("北京", " 北  京 "),
        ("ΟΔΟΣ", "οδοσ"),  # no final sigma: lowercased character by character
        ("दुनिया", "दनिया"),  # vowel sign U (Mn) goes, vowel signs I and AA (Mc) stay
    ],
)
def test_normalize_uncased(text: str, expected: str) -> None:
    assert normalize_uncased(text) == expected


def test_split_words_separates_punctuation() -> None:
    assert list(split_words("don't stop!! $5 a_b")) == [
        "don", "'", "t", "stop", "!", "!", "$", "5", "a", "_", "b"]


def test_encode_takes_longest_pieces(vocabulary: WordPieceVocabulary) -> None:
    # Greedy longest match: "unaff" + "##ordable", not "un" + "##aff" + "##ordable".
    assert vocabulary.encode("Unaffordable plays!") == [CLS, 2, 12, 3, 13, 4, SEP]


def test_encode_unknown_word_is_one_unk(vocabulary: WordPieceVocabulary) -> None:
    # "playx" starts with "play", but "##x" is missing, so the whole word is unknown.
    assert vocabulary.encode("playx a") == [CLS, UNK, 7, SEP]


def test_encode_long_word_is_unk(vocabulary: WordPieceVocabulary) -> None:
    assert vocabulary.encode("a" * 101) == [CLS, UNK, SEP]
    assert vocabulary.encode("a" * 100) == [CLS, UNK, SEP]  # no piece "##a"
    assert vocabulary.encode("Café") == [CLS, 6, SEP]


def test_encode_keeps_special_tokens(vocabulary: WordPieceVocabulary) -> None:
    assert vocabulary.encode("play [MASK]北[SEP]") == [CLS, 3, MASK, 5, SEP, SEP]
    assert vocabulary.encode("[mask]") == [CLS, UNK, UNK, UNK, SEP]


def test_encode_empty_text(vocabulary: WordPieceVocabulary) -> None:
    assert vocabulary.encode("") == [CLS, SEP]
