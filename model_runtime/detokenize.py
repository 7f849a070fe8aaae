"""The text of a generated sequence as its tokens arrive, decoding only the new token each time.

Decoding the whole output again for every token costs O(n) per token, O(n^2) per answer. The tokenizers
library's `DecodeStream` keeps the offsets it needs and returns only the new text (None while a token ends
inside a multi-byte character). The last token decodes the whole output once, so the final text is
exactly what `tokenizer.decode` gives for all of it, a trailing incomplete character included.
"""

from __future__ import annotations

from typing import Any

from tokenizers.decoders import DecodeStream


class Detokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.backend = getattr(tokenizer, "backend_tokenizer", None)  # a fast tokenizer's own; None when slow
        self.stream = DecodeStream(skip_special_tokens=True) if self.backend is not None else None
        self.text = ""

    def add(self, ids: list[int]) -> str:
        """The text of `ids` mid-stream, `ids[-1]` being the token just generated; what ends inside a
        multi-byte character is held until the rest arrives."""
        if self.stream is None or self.backend is None:
            return self.whole(ids)
        self.text += self.stream.step(self.backend, ids[-1]) or ""
        return self.text

    def whole(self, ids: list[int]) -> str:
        """The final text of `ids`: all of it decoded once."""
        self.text = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        return self.text
