"""The tokenizer of a gpt-oss weights folder (`tokenizer.json`), loaded offline with `tokenizers`.

Special tokens are found by their strings in the file: the published checkpoints carry the harmony
tokens at 199998..200018, the tiny test checkpoint at the end of its own small vocabulary.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HfTokenizer

TOKENIZER_FILE_NAME = "tokenizer.json"

# The special tokens of the o200k_harmony encoding, in id order from 199998 (reserved ids keep the
# offsets of the real vocabulary: `<|return|>` is the 5th, `<|call|>` the 15th, ...).
HARMONY_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|startoftext|>",  # 199998
    "<|endoftext|>",  # 199999
    "<|reserved_200000|>",
    "<|reserved_200001|>",
    "<|return|>",  # 200002
    "<|constrain|>",  # 200003
    "<|reserved_200004|>",
    "<|channel|>",  # 200005
    "<|start|>",  # 200006
    "<|end|>",  # 200007
    "<|message|>",  # 200008
    "<|reserved_200009|>",
    "<|reserved_200010|>",
    "<|reserved_200011|>",
    "<|call|>",  # 200012
    "<|reserved_200013|>",
    "<|reserved_200014|>",
    "<|reserved_200015|>",
    "<|reserved_200016|>",
    "<|reserved_200017|>",
    "<|endofprompt|>",  # 200018
)


class TokenizerError(ValueError):
    """The tokenizer file is missing, unreadable, or lacks a required token."""


@cache
def _byte_level_char_to_byte() -> dict[str, int]:
    """The GPT-2 byte-to-printable-character table that byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars, strict=True)}


def _decoder_is_byte_level(tokenizer_json: dict[str, object]) -> bool:
    decoder = tokenizer_json.get("decoder")
    if not isinstance(decoder, dict):
        return False
    if decoder.get("type") == "ByteLevel":
        return True
    parts = decoder.get("decoders")
    return isinstance(parts, list) and any(isinstance(part, dict) and part.get("type") == "ByteLevel" for part in parts)


class Tokenizer:
    """Text <-> token ids for one weights folder; never downloads anything."""

    def __init__(self, backend: HfTokenizer, *, byte_level: bool) -> None:
        self._backend = backend
        # Text never turns into special tokens: harmony's structure tokens are inserted by id only, so
        # a user who types "<|start|>" cannot forge a message boundary.
        self._backend.encode_special_tokens = True
        self._byte_level = byte_level
        self._special_ids = frozenset(
            index for index, token in backend.get_added_tokens_decoder().items() if token.special
        )
        self._bytes_cache: dict[int, bytes] = {}

    @classmethod
    def from_dir(cls, weights_dir: Path) -> Tokenizer:
        """Load `<weights_dir>/tokenizer.json`."""
        return cls.from_file(Path(weights_dir) / TOKENIZER_FILE_NAME)

    @classmethod
    def from_file(cls, path: Path) -> Tokenizer:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise TokenizerError(
                f"cannot read the tokenizer file {path}: {error.strerror or error}; the weights folder must "
                f"hold the checkpoint's {TOKENIZER_FILE_NAME}"
            ) from error
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_json(cls, text: str, *, source: str = "tokenizer.json") -> Tokenizer:
        try:
            parsed = json.loads(text)
            backend = HfTokenizer.from_str(text)
        except Exception as error:  # tokenizers raises plain Exception subclasses
            raise TokenizerError(f"{source} is not a valid tokenizers file: {error}") from error
        return cls(backend, byte_level=_decoder_is_byte_level(parsed))

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return int(self._backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of plain text; special-token strings in the text stay plain text."""
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int], *, skip_special_tokens: bool = False) -> str:
        return str(self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_id(self, special: str) -> int:
        """Id of a special token given by its string, e.g. `<|start|>`."""
        token_id = self._backend.token_to_id(special)
        if token_id is None:
            raise TokenizerError(
                f"the tokenizer has no token {special!r}; the weights folder's tokenizer.json must be the "
                "gpt-oss (o200k_harmony) tokenizer"
            )
        return int(token_id)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a token may hold part of a multi-byte UTF-8 character)."""
        cached = self._bytes_cache.get(token_id)
        if cached is not None:
            return cached
        piece = self._backend.id_to_token(token_id)
        if piece is None:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary of size {self.vocab_size}")
        table = _byte_level_char_to_byte()
        if self._byte_level and not self.is_special(token_id) and all(char in table for char in piece):
            result = bytes(table[char] for char in piece)
        else:
            result = self.decode([token_id]).encode("utf-8")
        self._bytes_cache[token_id] = result
        return result


# A fixed text the tiny tokenizer is trained on: harmony's header words, English, and some non-ASCII
# text so that multi-byte characters span several tokens.
_TINY_TRAINING_TEXT = """\
You are ChatGPT, a large language model trained by OpenAI.
Knowledge cutoff: 2024-06
Current date: 2025-06-28

Reasoning: low
Reasoning: medium
Reasoning: high

# Valid channels: analysis, commentary, final. Channel must be included for every message.
Calls to these tools must go to the commentary channel: 'functions'.
# Instructions
# Tools
## functions
namespace functions {
type get_current_weather = (_: { location: string }) => any;
} // namespace functions
system developer user assistant analysis commentary final to=functions json
The user asks a question. We should answer briefly and helpfully.
What is the capital of France? The capital of France is Paris.
What is 2 + 2? 2 + 2 = 4. Count from one to ten: one two three four five six seven eight nine ten.
Hello! How can I help you today? Please write a short poem about the sea.
The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.
Kubernetes operators serve models on GPUs; the operator watches a deployment and scales replicas.
Grüße aus München! Ça va très bien. Señor niño. Привет, мир! 日本語のテキスト。你好世界。 🙂👍
"""
TINY_REGULAR_VOCAB_SIZE = 512


def build_tiny_tokenizer() -> HfTokenizer:
    """A small byte-level BPE tokenizer (about 530 ids) with the harmony special tokens at the end.

    Deterministic: trained on a fixed text. Byte-level, so any text round-trips.
    """
    backend = HfTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_REGULAR_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(_TINY_TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    backend.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
            for token in HARMONY_SPECIAL_TOKENS
        ]
    )
    return backend
