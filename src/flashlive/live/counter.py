"""What a history entry costs in context, counted without stalling the event loop."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from flashlive.live.session import MESSAGE_OVERHEAD, content_pieces
from flashlive.protocol.content import Content

LONG_TEXT_CHARS = 4096  # longer texts are tokenized off the event loop, ahead of their use
LONG_TEXTS_KEPT = 64  # their counts, remembered for the turns still waiting to be committed


class TokenCounter:
    """What a history entry costs in context, as the conversation asks (synchronously).

    Tokenizing a long text takes a while (seconds for a 4 MB frame) and would stall the event
    loop for every session, so long pieces are counted ahead, in a thread (`prime`), and
    remembered by their hash; an entry holding one costs the sum of its pieces.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._long: OrderedDict[tuple[int, int], int] = OrderedDict()

    def __call__(self, content: Content) -> int:
        pieces = content_pieces(content)
        if all(len(p) < LONG_TEXT_CHARS for p in pieces):
            return int(self._engine.count_tokens("\n".join(pieces))) + MESSAGE_OVERHEAD
        return sum(self._piece(p) for p in pieces) + len(pieces) - 1 + MESSAGE_OVERHEAD

    def _piece(self, text: str) -> int:
        key = (len(text), hash(text))
        if key in self._long:
            return self._long[key]
        return int(self._engine.count_tokens(text))

    async def prime(self, contents: list[Content]) -> None:
        if self._engine is None:
            return
        for content in contents:
            for piece in content_pieces(content):
                key = (len(piece), hash(piece))
                if len(piece) >= LONG_TEXT_CHARS and key not in self._long:
                    self._long[key] = await asyncio.to_thread(self._engine.count_tokens, piece)
                    while len(self._long) > LONG_TEXTS_KEPT:
                        self._long.popitem(last=False)
