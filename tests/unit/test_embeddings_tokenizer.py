"""Tokenization and batching of the embedding model, against Hugging Face's tokenizer.

sentence-transformers tokenizes with the fast tokenizer from tokenizer.json and truncates to
256 tokens. The served model must produce the same token ids, or the vectors drift.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from enclave.embeddings.llama_embedder import LlamaEmbedder
from enclave.embeddings.source import default_model_folder, prepare_gguf, resolve_source
from enclave.embeddings.wordpiece import normalize_uncased
from enclave.errors import ModelLoadError
from enclave.models.embedded import default_chat_model

pytestmark = pytest.mark.slow

MAX_SEQ_LENGTH = 256
LONG_TEXT = " ".join(f"Sentence {number} describes the retention policy." for number in range(80))

SENTENCES = [
    "hi",
    "The capital of France is Paris.",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "我喜欢吃苹果和香蕉",
    "日本語のテキストと한국어 텍스트",
    "Café, déjà vu, naïve résumé, Ångström, Straße.",
    "Ελληνικά και русский текст, ΟΔΟΣ",  # a word-final capital sigma
    "नमस्ते दुनिया, यह एक परीक्षण वाक्य है।",  # Devanagari vowel signs (category Mc)
    "ওহে বিশ্ব",
    "สวัสดีชาวโลก นี่คือประโยคทดสอบ",
    "مرحبا بالعالم، هذه جملة اختبار.",
    "שלום עולם",
    "வணக்கம் உலகம்",
    "Հայերեն տեքստ, ქართული ტექსტი, የአማርኛ ጽሑፍ",
    "Tiếng Việt: Đường phố Hà Nội",
    "Special tokens [SEP] and [MASK] written in the text, [unused1] is not one",
    "a" * 101 + " and a word of more than 100 characters",
    "Page one\x0cPage two",  # form feed, common in text extracted from PDFs
    "zero\u200bwidth and soft\u00adhyphen",
    "emoji 😀 test!! C++ & C# cost $100 @home #tag",
    "  multiple   spaces\tand\nnewlines ",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ",
    "",
    LONG_TEXT,
]


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_gguf(resolve_source(None), tmp_path_factory.getbasetemp() / "embeddings")


@pytest.fixture(scope="module")
def embedder(gguf_path: Path) -> Iterator[LlamaEmbedder]:
    model = LlamaEmbedder(gguf_path, threads=1, batch_tokens=512)
    yield model
    model.close()


@pytest.fixture(scope="module")
def reference_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(default_model_folder() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_SEQ_LENGTH)
    return tokenizer


@pytest.mark.parametrize("text", SENTENCES, ids=range(len(SENTENCES)))
def test_tokens_match_reference(embedder: LlamaEmbedder, reference_tokenizer: Tokenizer,
                                text: str) -> None:
    tokens = embedder.truncate(embedder.tokenize(text))

    assert tokens == reference_tokenizer.encode(text).ids


def test_random_unicode_mostly_matches_reference(embedder: LlamaEmbedder,
                                                 reference_tokenizer: Tokenizer) -> None:
    # Random code points from many scripts, symbols and controls. A few rare characters
    # differ, because Python's Unicode tables (Unicode 14 in Python 3.11) and those inside
    # Hugging Face tokenizers put them in different categories, U+061D for example.
    generator = random.Random(0)
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
              (0x2000, 0x206F), (0xFF00, 0xFFEF), (0x1F300, 0x1F6FF), (0x0, 0x1F),
              (0x300, 0x36F)]
    mismatches = 0
    for _ in range(3000):
        text = "".join(chr(generator.randint(*generator.choice(blocks)))
                       for _ in range(generator.randint(1, 20)))
        expected = reference_tokenizer.encode(text).ids
        if embedder.truncate(embedder.tokenize(text)) != expected:
            mismatches += 1

    assert mismatches <= 15, f"{mismatches} of 3000 random strings tokenized differently"


def test_long_input_is_truncated_keeping_sep(embedder: LlamaEmbedder) -> None:
    tokens = embedder.tokenize(LONG_TEXT)
    truncated = embedder.truncate(tokens)

    assert len(tokens) > MAX_SEQ_LENGTH
    assert embedder.max_seq_length == MAX_SEQ_LENGTH
    assert len(truncated) == MAX_SEQ_LENGTH
    assert truncated[0] == 101
    assert truncated[-1] == 102
    assert truncated[:-1] == tokens[: MAX_SEQ_LENGTH - 1]


@pytest.mark.parametrize(
    "text",
    ["Café Ångström", "a\x0cb\x00c\ufffdd", "tab\tnew\nline\rcr", "x\u2028y\u00a0z",
     "İstanbul ǅ ﬁ", "e\u0301 combining", "\u202aembedded\u202c"],
)
def test_normalize_uncased_matches_reference(reference_tokenizer: Tokenizer, text: str) -> None:
    normalizer = reference_tokenizer.normalizer
    assert normalizer is not None

    assert normalize_uncased(text) == normalizer.normalize_str(text)


def test_batches_give_same_vectors_as_single_inputs(gguf_path: Path) -> None:
    # 300 is rounded up to 320 tokens, which fit one long input, so the inputs span several
    # batches.
    model = LlamaEmbedder(gguf_path, threads=1, batch_tokens=300)
    assert model.batch_tokens == 320
    try:
        texts = [*SENTENCES[:8], LONG_TEXT, LONG_TEXT.upper()]
        inputs = [model.truncate(model.tokenize(text)) for text in texts]
        together = model.embed_tokens(inputs)
        alone = np.vstack([model.embed_tokens([tokens]) for tokens in inputs])
    finally:
        model.close()

    assert together.shape == (len(texts), 384)
    # Other matrix shapes change the float rounding a little, and nothing more.
    cosines = np.sum(together * alone, axis=1)
    assert cosines.min() > 0.99999, cosines
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_embed_tokens_rejects_untruncated_input(embedder: LlamaEmbedder) -> None:
    tokens = embedder.tokenize(LONG_TEXT)

    with pytest.raises(ValueError, match=f"{len(tokens)} tokens"):
        embedder.embed_tokens([tokens])


def test_chat_model_is_rejected() -> None:
    with pytest.raises(ModelLoadError, match="causal attention"):
        LlamaEmbedder(default_chat_model(), threads=1, batch_tokens=512)
