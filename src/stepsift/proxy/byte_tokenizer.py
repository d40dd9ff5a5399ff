"""Byte-level rendering of a conversation for the built-in proxy, with its loss mask.

A record becomes: BOS, then per turn ROLE-token, the turn's UTF-8 bytes, END.
Supervised turns (assistant replies) have their bytes and their END token in the
loss mask, mirroring Qwen's chat template where the reply through `<|im_end|>` is
trained on; role tokens and every user/system byte are not.
"""

from __future__ import annotations

from collections.abc import Sequence

from stepsift.data.record import Turn

PAD, BOS, SYSTEM, USER, ASSISTANT, END = range(256, 262)
VOCAB_SIZE = 262
ROLE_TOKEN = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


def render(turns: Sequence[Turn]) -> tuple[list[int], list[bool]]:
    """Token ids and, per token, whether the model is trained to predict it."""
    ids: list[int] = [BOS]
    supervised: list[bool] = [False]
    for turn in turns:
        body = list(turn.text.encode("utf-8")) + [END]
        ids.append(ROLE_TOKEN[turn.role])
        supervised.append(False)
        ids.extend(body)
        supervised.extend([turn.supervised] * len(body))
    return ids, supervised


def decode(ids: Sequence[int]) -> str:
    """Bytes back to text; special tokens are shown by name (for tests and debugging)."""
    names = {PAD: "<pad>", BOS: "<bos>", SYSTEM: "<system>", USER: "<user>"}
    names.update({ASSISTANT: "<assistant>", END: "<end>"})
    out, buf = [], bytearray()
    for i in ids:
        if i < 256:
            buf.append(i)
            continue
        out.append(buf.decode("utf-8", errors="replace"))
        buf = bytearray()
        out.append(names[i])
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)
