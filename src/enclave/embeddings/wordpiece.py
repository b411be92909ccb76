"""Uncased BERT WordPiece tokenization, done the way Hugging Face's tokenizers library does it.

llama.cpp has a WordPiece tokenizer, but it splits words and handles some characters
differently: it drops spacing combining marks (the vowel signs of Devanagari and Bengali),
splits on control characters that BERT deletes, and does not recognise special tokens written
in the text. Every one of those changes the token ids and so the vectors. Enclave therefore
tokenizes BERT models here, in four steps, and gives llama.cpp the token ids:

1. special tokens written in the text (``[SEP]``, ``[MASK]`` ...) are kept as such;
2. normalisation: control and format characters are deleted, whitespace becomes a space,
   CJK ideographs are surrounded by spaces, combining marks (Unicode category Mn) are removed
   after NFD decomposition, and the text is lowercased;
3. pre-tokenization: the text is split at whitespace, and every punctuation character
   (Unicode category P, or ASCII punctuation and symbols) becomes a word of its own;
4. WordPiece: each word is split greedily into the longest vocabulary entries, with
   continuation pieces marked ``##``. A word with no such split, or longer than 100
   characters, becomes ``[UNK]``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

# BERT's limit: longer words become [UNK] without being looked up.
MAX_CHARS_PER_WORD = 100

# Control, format, private-use and surrogate characters, which BERT's normaliser deletes.
_DELETED_CATEGORIES = ("Cc", "Cf", "Co", "Cs")
# CJK ideograph blocks that BERT treats as one word per character.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def normalize_uncased(text: str) -> str:
    """Normalise text as the uncased BERT normaliser of Hugging Face tokenizers does."""
    cleaned = []
    for char in text:
        if char in "\t\n\r":
            cleaned.append(" ")
        elif char in "\0\ufffd" or unicodedata.category(char) in _DELETED_CATEGORIES:
            continue
        elif char.isspace():
            cleaned.append(" ")
        elif _is_cjk(char):
            cleaned.append(f" {char} ")
        else:
            cleaned.append(char)
    decomposed = unicodedata.normalize("NFD", "".join(cleaned))
    # Character by character, as Hugging Face tokenizers lowercases: str.lower() on the whole
    # string would turn a word-final capital sigma into the final form ς instead of σ.
    return "".join(
        char.lower() for char in decomposed if unicodedata.category(char) != "Mn"
    )


def split_words(normalized: str) -> Iterator[str]:
    """Yield the words of normalised text, split at whitespace; each punctuation mark is a word."""
    for chunk in normalized.split():
        word: list[str] = []
        for char in chunk:
            if _is_punctuation(char):
                if word:
                    yield "".join(word)
                    word = []
                yield char
            else:
                word.append(char)
        if word:
            yield "".join(word)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(start <= code <= end for start, end in _CJK_RANGES)


def _is_punctuation(char: str) -> bool:
    # ASCII symbols such as $ + < = > ^ ` | ~ count as punctuation for BERT.
    if char.isascii() and not char.isalnum() and not char.isspace():
        return True
    return unicodedata.category(char).startswith("P")


@dataclass
class WordPieceVocabulary:
    """A WordPiece vocabulary split by role, with the ids BERT adds around each input."""

    word_start: dict[str, int]
    continuation: dict[str, int]
    special: dict[str, int]
    unk_id: int
    cls_id: int
    sep_id: int
    _special_pattern: re.Pattern[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.special:
            alternatives = sorted(self.special, key=len, reverse=True)
            self._special_pattern = re.compile("|".join(map(re.escape, alternatives)))

    def encode(self, text: str) -> list[int]:
        """Return the token ids of text between [CLS] and [SEP], before truncation."""
        ids = [self.cls_id]
        for segment, is_special in self._segments(text):
            if is_special:
                ids.append(self.special[segment])
                continue
            for word in split_words(normalize_uncased(segment)):
                ids.extend(self._word_ids(word))
        ids.append(self.sep_id)
        return ids

    def _segments(self, text: str) -> Iterator[tuple[str, bool]]:
        """Yield pieces of text, each marked as a special token or as plain text."""
        if self._special_pattern is None:
            yield text, False
            return
        position = 0
        for match in self._special_pattern.finditer(text):
            if match.start() > position:
                yield text[position:match.start()], False
            yield match.group(), True
            position = match.end()
        if position < len(text):
            yield text[position:], False

    def _word_ids(self, word: str) -> list[int]:
        if len(word) > MAX_CHARS_PER_WORD:
            return [self.unk_id]
        ids = []
        start = 0
        while start < len(word):
            pieces = self.word_start if start == 0 else self.continuation
            end = len(word)
            while end > start and word[start:end] not in pieces:
                end -= 1
            if end == start:
                return [self.unk_id]
            ids.append(pieces[word[start:end]])
            start = end
        return ids
