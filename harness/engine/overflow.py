"""What a backend does with a request longer than the model's context: lm-eval's cut, said out loud.

lm-eval keeps the last tokens of an overlong prompt without a word. The harness keeps that cut (a
score is only comparable with lm-eval's when the model saw the same tokens), but a silent cut hides
that the model never saw the start of the prompt (the instruction, the first shots), so every call
counts the requests it cut (the backend's `truncated`, which the run record keeps), logs one warning
for all of them, and `on_overflow="error"` refuses them instead, before any batch runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from harness.errors import HarnessError

log = logging.getLogger(__name__)

ON_OVERFLOW = ("truncate", "error")


def check_on_overflow(value: str) -> str:
    if value not in ON_OVERFLOW:
        raise HarnessError(f"--on-overflow {value!r} is not supported; use {' or '.join(ON_OVERFLOW)}")
    return value


def handle_overflow(on_overflow: str, phase: str, cut: Mapping[int, tuple[str, int]], total: int,
                    max_length: int) -> int:
    """How many requests of one call were cut (0 when none), after one warning for all of them; or
    a one-line HarnessError about the first, under `on_overflow="error"`.

    `cut` maps a request index to what is too long about it ("its prompt of 3000 tokens") and how
    many prompt tokens the cut keeps.
    """
    if not cut:
        return 0
    if on_overflow == "error":
        index = min(cut)
        raise HarnessError(f"{phase} request {index}: {cut[index][0]}, more than the model's max length "
                           f"{max_length}; shorten the prompt (fewer shots, a shorter template) or use "
                           "--on-overflow truncate to keep its last tokens as lm-eval does")
    kept = sorted({tokens for _, tokens in cut.values()})
    to = f"{kept[0]}" if len(kept) == 1 else f"{kept[0]}-{kept[-1]}"
    log.warning("%s: %d of %d prompts are longer than the model's max length %d and were cut from the left "
                "to their last %s tokens, as lm-eval does (--on-overflow error refuses them)",
                phase, len(cut), total, max_length, to)
    return len(cut)
