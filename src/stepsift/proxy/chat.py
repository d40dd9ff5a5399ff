"""Render a record with a Hugging Face model's own chat template and find the tokens the
training loss supervises.

Which tokens count (see shared FORMATS.md): each supervised assistant turn's reply as the
template writes it, from after the assistant header through the template's end-of-turn
marker (for Qwen's ChatML: `reply<|im_end|>\\n`); never system or user text, image
tokens or padding.

How the reply is found, for any template: render the conversation up to turn k with the
generation prompt (which ends with the assistant header) and up to and including turn k;
the second extends the first by exactly turn k's reply. That needs a template whose
renderings of a conversation's prefixes are prefixes of its full rendering; where one is
not (e.g. a template that rewrites earlier turns), the record is refused with a message
rather than masked wrongly.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stepsift.data.record import Record


class TemplateError(ValueError):
    """A record the model's chat template cannot be masked for."""


@dataclass(frozen=True)
class RenderedRecord:
    text: str  # the whole conversation as the template writes it
    supervised_spans: tuple[tuple[int, int], ...]  # character spans of supervised replies


def to_messages(record: Record, multimodal: bool) -> list[dict[str, Any]]:
    """The record as chat messages. A record's images go, in order, at the start of its
    first user turn (canonical records keep images per record, not per turn).
    Multimodal processors take content as a list of parts; text-only tokenizers a string."""
    messages: list[dict[str, Any]] = []
    images_placed = not record.images
    for turn in record.turns:
        if not multimodal:
            messages.append({"role": turn.role, "content": turn.text})
            continue
        parts: list[dict[str, Any]] = []
        if not images_placed and turn.role == "user":
            parts += [{"type": "image"} for _ in record.images]
            images_placed = True
        parts.append({"type": "text", "text": turn.text})
        messages.append({"role": turn.role, "content": parts})
    if not images_placed:
        raise TemplateError(f"{record.source}: record {record.id} has images but no user turn")
    return messages


def render(
    template_owner: Any, record: Record, multimodal: bool, chat_template: str | None = None
) -> RenderedRecord:
    """Render `record` with `template_owner.apply_chat_template` (a tokenizer or processor)
    and locate its supervised replies."""
    messages = to_messages(record, multimodal)

    def text(upto: int, generation_prompt: bool) -> str:
        return template_owner.apply_chat_template(
            messages[:upto],
            tokenize=False,
            add_generation_prompt=generation_prompt,
            chat_template=chat_template,
        )

    full = text(len(messages), False)
    spans = []
    for k, turn in enumerate(record.turns):
        if turn.role != "assistant" or not turn.supervised:
            continue
        before, through = text(k, True), text(k + 1, False)
        if not (full.startswith(through) and through.startswith(before)):
            raise TemplateError(
                f"{record.source}: record {record.id}: the chat template does not render "
                f"turn {k} as an extension of the turns before it, so its reply cannot be "
                "located; pass a prefix-stable --chat-template"
            )
        if len(through) > len(before):
            spans.append((len(before), len(through)))
    return RenderedRecord(full, tuple(spans))


def supervised_token_mask(
    offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[bool]:
    """Which tokens (given their character offsets) lie mostly inside a supervised span.

    The text is tokenised whole, so a token can straddle a span's edge (a reply's trailing
    space merged into the next turn's " USER"); it counts where most of its characters are.
    """

    def inside(start: int, end: int) -> bool:
        if end <= start:  # an empty token: where it starts
            return any(lo <= start < hi for lo, hi in spans)
        overlap = sum(max(0, min(end, hi) - max(start, lo)) for lo, hi in spans)
        return 2 * overlap > end - start

    return [inside(start, end) for start, end in offsets]


def shift_spans(
    spans: Sequence[tuple[int, int]], replacements: Sequence[dict[str, Any]]
) -> list[tuple[int, int]]:
    """Character spans of the rendered text moved to where they lie in the text a
    processor tokenised, after it expanded each image placeholder (transformers'
    `text_replacement_offsets`: each placeholder's `span` in the rendered text and its
    `new_span` in the expanded one). Supervised spans never contain a placeholder."""
    ends = [r["span"][1] for r in replacements]
    gained = [0] + [r["new_span"][1] - r["span"][1] for r in replacements]

    def moved(char: int) -> int:  # past every placeholder that ends at or before it
        return char + gained[bisect.bisect_right(ends, char)]

    return [(moved(lo), moved(hi)) for lo, hi in spans]
