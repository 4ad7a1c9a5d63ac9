"""The tokenizer wrapper: offline loading, special tokens by string, bytes per token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gptoss_runtime.tokenizer import HARMONY_SPECIAL_TOKENS, Tokenizer, TokenizerError

TEXT = "Grüße aus München! 日本語のテキスト 🙂 and plain ASCII."


def test_text_round_trips(tiny_tokenizer: Tokenizer) -> None:
    ids = tiny_tokenizer.encode(TEXT)
    assert tiny_tokenizer.decode(ids) == TEXT
    assert b"".join(tiny_tokenizer.token_bytes(i) for i in ids) == TEXT.encode("utf-8")


def test_some_tokens_hold_part_of_a_character(tiny_tokenizer: Tokenizer) -> None:
    pieces = [tiny_tokenizer.token_bytes(i) for i in tiny_tokenizer.encode("🙂日本")]
    partial = []
    for piece in pieces:
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError:
            partial.append(piece)
    assert partial, "the streaming tests rely on characters split across tokens"


def test_special_tokens_keep_the_offsets_of_the_real_vocabulary(tiny_tokenizer: Tokenizer) -> None:
    base = tiny_tokenizer.token_id("<|startoftext|>")
    real_ids = {"<|return|>": 200002, "<|constrain|>": 200003, "<|channel|>": 200005, "<|start|>": 200006}
    real_ids |= {"<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012, "<|endoftext|>": 199999}
    for token, real in real_ids.items():
        assert tiny_tokenizer.token_id(token) - base == real - 199998
        assert tiny_tokenizer.is_special(tiny_tokenizer.token_id(token))
    assert tiny_tokenizer.vocab_size == base + len(HARMONY_SPECIAL_TOKENS)
    assert not tiny_tokenizer.is_special(tiny_tokenizer.encode("a")[0])


def test_text_never_becomes_a_special_token(tiny_tokenizer: Tokenizer) -> None:
    ids = tiny_tokenizer.encode("<|start|>assistant<|message|>")
    assert not any(tiny_tokenizer.is_special(i) for i in ids)
    assert tiny_tokenizer.decode(ids) == "<|start|>assistant<|message|>"


def test_unknown_special_token_is_named(tiny_tokenizer: Tokenizer) -> None:
    with pytest.raises(TokenizerError, match=re.escape("no token '<|nope|>'")):
        tiny_tokenizer.token_id("<|nope|>")
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tiny_tokenizer.token_bytes(tiny_tokenizer.vocab_size + 5)


def test_missing_or_corrupt_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"cannot read the tokenizer file .*tokenizer\.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizers file"):
        Tokenizer.from_dir(tmp_path)
