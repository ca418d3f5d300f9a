"""One sequence's sampler: llama.cpp's sampler chain with that sequence's own settings.

Each generation in a batch samples from its own row of logits with its own temperature, grammar
and seed, so each holds a chain of its own. The chain's order is the one llama-cpp-python's
`Llama.generate` builds (penalties, grammar, then greedy or top-k / typical / top-p / min-p /
temperature / a seeded draw), so a seeded request replays as it did on a single sequence.
"""

from __future__ import annotations

import random
from typing import Any

from flashlive.engine.base import SamplingParams

PENALTY_LAST_N = 64  # the window llama-cpp-python's penalties look back over


class Sampler:
    """Owns a llama.cpp sampler chain; `close` frees it (call it on the engine's thread)."""

    def __init__(self, vocab: Any, params: SamplingParams) -> None:
        import llama_cpp

        self._chain: Any = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        self.seed = params.seed if params.seed is not None else random.getrandbits(32)
        for link in _links(vocab, params, self.seed & 0xFFFFFFFF):
            llama_cpp.llama_sampler_chain_add(self._chain, link)

    def sample(self, ctx: Any, index: int) -> int:
        """The next token from row `index` of the last decode's logits, accepted by the chain
        (the grammar and penalties see it)."""
        import llama_cpp

        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def close(self) -> None:
        import llama_cpp

        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def _links(vocab: Any, params: SamplingParams, seed: int) -> list[Any]:
    import llama_cpp

    links = [
        llama_cpp.llama_sampler_init_penalties(
            llama_cpp.llama_vocab_n_tokens(vocab),
            PENALTY_LAST_N,
            1.0,
            params.frequency_penalty,
            params.presence_penalty,
        )
    ]
    if params.grammar:
        # The grammar was parsed by `check_grammar` before it got here: it is never NULL.
        links.append(llama_cpp.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root"))
    if params.temperature == 0.0:
        return [*links, llama_cpp.llama_sampler_init_greedy()]
    if params.temperature < 0.0:
        return [*links, llama_cpp.llama_sampler_init_dist(seed)]
    return [
        *links,
        llama_cpp.llama_sampler_init_top_k(params.top_k),
        llama_cpp.llama_sampler_init_typical(1.0, 1),
        llama_cpp.llama_sampler_init_top_p(params.top_p, 1),
        llama_cpp.llama_sampler_init_min_p(0.0, 1),
        llama_cpp.llama_sampler_init_temp(params.temperature),
        llama_cpp.llama_sampler_init_dist(seed),
    ]
