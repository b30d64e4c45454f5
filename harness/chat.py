"""Chat formats: how a list of chat messages becomes the prompt text a model reads.

Rendering a prompt needs only the tokenizer's chat template, never a model. So the planner, the
tuning mixture and `harness tasks show --chat-model` all take a `ChatFormat`, made from a tokenizer
(or none), and a backend offers the one made from its own tokenizer. There is one implementation of
chat rendering, so an evaluation prompt and a training prompt for the same row cannot differ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ChatFormat:
    """Messages -> text ending in the assistant header, as the model was tuned; or no chat template."""

    render_messages: Callable[[Messages], str] | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> ChatFormat:
        """The tokenizer's own chat template (transformers' `apply_chat_template`), if it has one."""
        if not getattr(tokenizer, "chat_template", None):
            return cls()
        return cls(lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    @classmethod
    def from_pretrained(cls, model: str) -> ChatFormat:
        """The chat format of a local model folder or hub id, loading only its tokenizer."""
        from transformers import AutoTokenizer

        try:
            return cls.from_tokenizer(AutoTokenizer.from_pretrained(model))
        except (OSError, ValueError, KeyError) as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise HarnessError(f"{model}: cannot load its tokenizer ({first_line}); pass a model folder, "
                               "or a hub id when online") from None

    @property
    def available(self) -> bool:
        return self.render_messages is not None

    def render(self, messages: Messages) -> str:
        assert self.render_messages is not None, "render only when the format has a chat template"
        return self.render_messages(messages)

    def resolve(self, mode: str, whose: str = "the model's") -> bool:
        """Whether prompts go through the chat template under --chat auto|on|off (auto: when there is one)."""
        if mode not in ("auto", "on", "off"):
            raise HarnessError(f"--chat must be auto, on or off, got {mode!r}")
        if mode == "on" and not self.available:
            raise HarnessError(f"--chat on: {whose} tokenizer has no chat template; use --chat off")
        return mode != "off" and self.available


PLAIN = ChatFormat()
"""No chat template: prompts in the plain layout only."""
