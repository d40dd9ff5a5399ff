"""Per-record format detection and parsing of one JSON object into canonical turns.

Pure functions on parsed JSON: no file I/O, no path resolution (that is the reader's job).
Every defect is collected as an `Issue` (field path + message) instead of being raised, so
the reader can report all problems of a file at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .record import Turn

FORMATS = ("llava", "sharegpt", "openai", "plain", "alpaca")
PLACEHOLDER = "<image>"

# The placeholder plus one adjacent newline ("<image>\nText" and "Text\n<image>" both occur).
_PLACEHOLDER_RE = re.compile(r"<image>\n|\n<image>|<image>")

# LLaVA / LLaMA-Factory tag values, and the OpenAI-style role names, mapped to ours.
_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
_OPENAI_ROLES = ("system", "user", "assistant")

# Top-level keys each format consumes; every other key is kept as metadata.
_IMAGE_KEYS = ("image", "images")
_CONSUMED = {
    "llava": {"id", "conversations", *_IMAGE_KEYS},
    "sharegpt": {"id", "messages", *_IMAGE_KEYS},
    "openai": {"id", "messages", *_IMAGE_KEYS},
    "plain": {"id", "prompt", "response", "system", *_IMAGE_KEYS},
    "alpaca": {"id", "instruction", "input", "output", "system", *_IMAGE_KEYS},
}

# The field named by record-level conversation problems (e.g. "no assistant turn").
_TURNS_KEY = {
    "llava": "conversations",
    "sharegpt": "messages",
    "openai": "messages",
    "plain": "prompt",
    "alpaca": "instruction",
}

_FORMAT_HINTS = (
    "llava (conversations + from/value)",
    "sharegpt (messages with string content)",
    "openai (messages with content parts)",
    "plain (prompt/response)",
    "alpaca (instruction/input/output)",
)


@dataclass(frozen=True)
class Issue:
    field: str  # e.g. "conversations[2].value"; "" for the whole record
    message: str


@dataclass(frozen=True)
class ImageRef:
    path: str  # as written in the record, unresolved ("" or a name when `data` is given)
    field: str  # where it was written, for error messages
    data: bytes | None = None  # embedded image bytes, if any


@dataclass
class ParsedRecord:
    format: str
    id: str | None
    turns: list[Turn] = field(default_factory=list)
    images: list[ImageRef] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)


def type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages users can act on."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for t, name in ((str, "string"), (int, "integer"), (float, "number")):
        if isinstance(value, t):
            return name
    return "array" if isinstance(value, list) else "object"


def short_repr(value: str, limit: int = 80) -> str:
    """`repr` of a string from the data, cut to `limit` characters (values can be huge)."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"... ({len(value):,} characters)"


def unicode_issue(value: str) -> str | None:
    """Why a parsed string is not valid Unicode text, or None.

    JSON can write an unpaired surrogate (`"\\ud800"`); Python keeps it, but tokenizers, Arrow
    and UTF-8 output all fail on it, so it is rejected here, where the field is known.
    """
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        code, at = ord(value[e.start]), e.start + 1
        return f"not valid Unicode text: unpaired surrogate \\u{code:04x} at character {at}"
    return None


def detect_format(obj: dict[str, Any]) -> str | None:
    """Which format a record is in, from its keys; None when none fits."""
    if "conversations" in obj:
        return "llava"
    if "messages" in obj:
        msgs = obj["messages"]
        has_parts = isinstance(msgs, list) and any(
            isinstance(m, dict) and isinstance(m.get("content"), list) for m in msgs
        )
        return "openai" if has_parts else "sharegpt"
    if "prompt" in obj or "response" in obj:
        return "plain"
    if "instruction" in obj or "output" in obj:
        return "alpaca"
    return None


def unknown_format_message(obj: dict[str, Any]) -> str:
    shown = [short_repr(k, 40) for k in list(obj)[:20]]
    more = f", ... ({len(obj)} keys)" if len(obj) > 20 else ""
    keys = ", ".join(shown) + more or "none"
    return f"unknown record format (keys: {keys}); known formats: " + "; ".join(_FORMAT_HINTS)


def record_id(obj: dict[str, Any]) -> tuple[str | None, Issue | None]:
    """The record's own `id` as a string (ints become str), or None when it has none."""
    rid = obj.get("id")
    if rid is None:
        return None, None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None, Issue("id", f"expected a string or integer id, got {type_name(rid)}")
    if rid == "":
        return None, Issue("id", "id is an empty string")
    if isinstance(rid, str) and (bad := unicode_issue(rid)):
        return None, Issue("id", bad)
    return str(rid), None


def parse_record(obj: dict[str, Any], fmt: str) -> ParsedRecord:
    """Parse one JSON object known to be in format `fmt` (see `detect_format`)."""
    rid, id_issue = record_id(obj)
    rec = ParsedRecord(format=fmt, id=rid)
    if id_issue:
        rec.issues.append(id_issue)
    rec.metadata = {k: v for k, v in obj.items() if k not in _CONSUMED[fmt]}
    image_key = _parse_image_list(obj, rec)
    turns_key = _TURNS_KEY[fmt]
    if fmt == "openai":
        turns = _parse_openai(obj, rec)
    else:
        if fmt == "llava":
            turns = _parse_messages(obj, rec, "conversations", "from", "value")
        elif fmt == "sharegpt":
            turns = _parse_messages(obj, rec, "messages", "role", "content")
        elif fmt == "plain":
            turns = _parse_plain(obj, rec)
        else:
            turns = _parse_alpaca(obj, rec)
        turns = _strip_placeholders(turns, rec, image_key or turns_key)
    rec.turns = turns if turns is not None else []
    if turns is not None:  # structure was sound, so "nothing supervised" is a real finding
        _check_supervision(rec.turns, rec, turns_key)
    for ref in rec.images:
        _check_image_ref(ref, rec)
    return rec


# ---- shared pieces -------------------------------------------------------------------------


def _parse_image_list(obj: dict[str, Any], rec: ParsedRecord) -> str | None:
    """Read `image` / `images` (a path or a list of paths); return the key used."""
    keys = [k for k in _IMAGE_KEYS if obj.get(k) is not None]
    if not keys:
        return None
    if len(keys) == 2:
        rec.issues.append(Issue("images", "both 'image' and 'images' are given; use one"))
        return "images"
    key = keys[0]
    value = obj[key]
    if isinstance(value, (str, dict)):
        _add_image(value, key, rec)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _add_image(item, f"{key}[{i}]", rec)
    else:
        msg = f"expected an image path or a list of paths, got {type_name(value)}"
        rec.issues.append(Issue(key, msg))
    return key


def _add_image(value: Any, where: str, rec: ParsedRecord) -> None:
    if (ref := image_ref(value, where, rec)) is not None:
        rec.images.append(ref)


def image_ref(value: Any, where: str, rec: ParsedRecord) -> ImageRef | None:
    """A path string, or the `{"bytes", "path"}` struct of HF datasets' Image feature (as
    Parquet/Arrow rows and their JSON exports hold it): bytes win, else the path is used."""
    if isinstance(value, str):
        return ImageRef(value, where)
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        data, path = value.get("bytes"), value.get("path")
        if isinstance(data, (bytes, bytearray)):
            name = path if isinstance(path, str) else ""
            return ImageRef(name, f"{where}.bytes", bytes(data))
        if data is not None:
            msg = f"expected image bytes, got {type_name(data)}"
            rec.issues.append(Issue(f"{where}.bytes", msg))
            return None
        if isinstance(path, str):
            return ImageRef(path, f"{where}.path")
        msg = "image struct has neither bytes nor a path" if path is None else (
            f"expected an image path string, got {type_name(path)}"
        )  # fmt: skip
        rec.issues.append(Issue(where, msg))
        return None
    if isinstance(value, dict):
        keys = ", ".join(short_repr(str(k), 20) for k in list(value)[:5]) or "none"
        msg = f"expected an image path or a {{'bytes', 'path'}} struct; got keys {keys}"
    else:
        msg = f"expected an image path string, got {type_name(value)}"
    rec.issues.append(Issue(where, msg))
    return None


def image_path_issue(path: str) -> str | None:
    """Why an image path as written can never name a local file, or None."""
    if not path.strip():
        return "empty image path"
    if re.match(r"(https?|data|s3|gs):", path):
        return f"only local image files are supported, got {short_repr(path)}"
    if "\0" in path:
        return f"image path contains a NUL character: {short_repr(path)}"
    return unicode_issue(path)


def _check_image_ref(ref: ImageRef, rec: ParsedRecord) -> None:
    if ref.data is not None:
        return  # embedded: its bytes are checked by the reader, its path never opened
    msg = image_path_issue(ref.path)
    if msg:
        rec.issues.append(Issue(ref.field, msg))


def _require_str(obj: dict[str, Any], key: str, path: str, rec: ParsedRecord) -> str | None:
    value = obj.get(key)
    if isinstance(value, str):
        return _valid_text(value, path, rec)
    msg = "missing" if key not in obj else f"expected a string, got {type_name(value)}"
    rec.issues.append(Issue(path, msg))
    return None


def _optional_str(obj: dict[str, Any], key: str, rec: ParsedRecord) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return _valid_text(value, key, rec)
    rec.issues.append(Issue(key, f"expected a string, got {type_name(value)}"))
    return None


def _valid_text(value: str, path: str, rec: ParsedRecord) -> str | None:
    bad = unicode_issue(value)
    if bad:
        rec.issues.append(Issue(path, bad))
        return None
    return value


def _role(value: Any, path: str, rec: ParsedRecord, allowed: dict[str, str]) -> str | None:
    if not isinstance(value, str):
        msg = "missing" if value is None else f"expected a string, got {type_name(value)}"
        rec.issues.append(Issue(path, msg))
        return None
    role = allowed.get(value)
    if role is None:
        msg = f"unknown role {short_repr(value)}; expected one of: {', '.join(allowed)}"
        rec.issues.append(Issue(path, msg))
    return role


def _supervised(msg: dict[str, Any], role: str, path: str, rec: ParsedRecord) -> bool:
    """Assistant turns are trained on unless ms-swift's `"loss": false` says otherwise."""
    loss = msg.get("loss")
    if loss is not None and not isinstance(loss, bool):
        rec.issues.append(Issue(f"{path}.loss", f"expected true/false, got {type_name(loss)}"))
    return role == "assistant" and loss is not False


def _list_of_objects(obj: dict[str, Any], key: str, rec: ParsedRecord) -> list[Any] | None:
    value = obj.get(key)
    if isinstance(value, list):
        return value
    rec.issues.append(Issue(key, f"expected a list of messages, got {type_name(value)}"))
    return None


def _check_supervision(turns: list[Turn], rec: ParsedRecord, key: str) -> None:
    if not any(t.role == "assistant" for t in turns):
        rec.issues.append(Issue(key, "no assistant turn: nothing to train on"))
    elif not any(t.supervised for t in turns):
        rec.issues.append(Issue(key, 'no supervised turn: every assistant turn has "loss": false'))


def _strip_placeholders(
    turns: list[Turn] | None, rec: ParsedRecord, field_name: str
) -> list[Turn] | None:
    """Remove `<image>` placeholders; their count must match the images when any are used.

    Images with no placeholder at all are accepted and sit before the first user text.
    """
    if turns is None:
        return None
    count = sum(t.text.count(PLACEHOLDER) for t in turns)
    if count and count != len(rec.images):
        msg = f"{count} {PLACEHOLDER} placeholder(s) in the text but {len(rec.images)} image(s)"
        rec.issues.append(Issue(field_name, msg))
    return [Turn(t.role, _PLACEHOLDER_RE.sub("", t.text), t.supervised) for t in turns]


# ---- the formats ---------------------------------------------------------------------------


def _parse_messages(
    obj: dict[str, Any], rec: ParsedRecord, key: str, role_key: str, text_key: str
) -> list[Turn] | None:
    """LLaVA (`conversations`/`from`/`value`) and sharegpt (`messages`/`role`/`content`)."""
    msgs = _list_of_objects(obj, key, rec)
    if msgs is None:
        return None
    turns: list[Turn] = []
    before = len(rec.issues)
    for i, msg in enumerate(msgs):
        path = f"{key}[{i}]"
        if not isinstance(msg, dict):
            want = f"an object with '{role_key}' and '{text_key}'"
            rec.issues.append(Issue(path, f"expected {want}, got {type_name(msg)}"))
            continue
        role = _role(msg.get(role_key), f"{path}.{role_key}", rec, _ROLE_ALIASES)
        text = _require_str(msg, text_key, f"{path}.{text_key}", rec)
        if role is not None and text is not None:
            turns.append(Turn(role, text, _supervised(msg, role, path, rec)))
    return turns if len(rec.issues) == before else None


def _parse_openai(obj: dict[str, Any], rec: ParsedRecord) -> list[Turn] | None:
    """Messages whose content is a string or a list of text/image parts (HF/TRL, OpenAI).

    An image part without its own path takes the next path of the record's image list.
    """
    msgs = _list_of_objects(obj, "messages", rec)
    if msgs is None:
        return None
    listed, rec.images = rec.images, []  # re-ordered below into the order parts use them
    pending = list(listed)  # consumed front to back by image parts without a path
    turns: list[Turn] = []
    before = len(rec.issues)
    roles = {r: r for r in _OPENAI_ROLES}
    for i, msg in enumerate(msgs):
        path = f"messages[{i}]"
        if not isinstance(msg, dict):
            msg_type = type_name(msg)
            rec.issues.append(Issue(path, f"expected an object with role/content, got {msg_type}"))
            continue
        role = _role(msg.get("role"), f"{path}.role", rec, roles)
        content = msg.get("content")
        if isinstance(content, str):
            text: str | None = content
        elif isinstance(content, list):
            texts: list[str] = []
            for j, part in enumerate(content):
                ppath = f"{path}.content[{j}]"
                got = _parse_part(part, ppath, rec, pending)
                if isinstance(got, ImageRef):
                    rec.images.append(got)
                elif got is not None:
                    texts.append(got)
            text = "".join(texts)
        else:
            what = f"a string or a list of parts, got {type_name(content)}"
            rec.issues.append(Issue(f"{path}.content", f"expected {what}"))
            text = None
        if role is not None and text is not None:
            turns.append(Turn(role, text, _supervised(msg, role, path, rec)))
    if pending:
        key = listed[0].field.split("[")[0]
        used = len(listed) - len(pending)
        msg = f"{len(listed)} image(s) listed but only {used} image part(s) without a path use them"
        rec.issues.append(Issue(key, msg))
    return turns if len(rec.issues) == before else None


def _parse_part(
    part: Any, path: str, rec: ParsedRecord, pending: list[ImageRef]
) -> str | ImageRef | None:
    """One content part: returns its text, its image, or None (issue recorded)."""
    if not isinstance(part, dict):
        rec.issues.append(Issue(path, f"expected a content part object, got {type_name(part)}"))
        return None
    kind = part.get("type")
    if kind == "text":
        return _require_str(part, "text", f"{path}.text", rec)
    if kind == "image":
        for k in ("image", "path", "url"):
            value = part.get(k)
            if isinstance(value, str):
                return ImageRef(value.removeprefix("file://"), f"{path}.{k}")
            if k == "image" and isinstance(value, dict):
                return image_ref(value, f"{path}.image", rec)
            if value is not None:
                msg = f"expected an image path string, got {type_name(value)}"
                rec.issues.append(Issue(f"{path}.{k}", msg))
                return None
        if pending:
            return pending.pop(0)
        msg = "image part has no path and the record's image list has none left for it"
        rec.issues.append(Issue(path, msg))
        return None
    if kind == "image_url":
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        if isinstance(url, str):
            return ImageRef(url.removeprefix("file://"), f"{path}.image_url.url")
        msg = f"expected {{'url': path}}, got {type_name(value)}"
        rec.issues.append(Issue(f"{path}.image_url", msg))
        return None
    kinds = "'text', 'image' or 'image_url'"
    if isinstance(kind, str):
        msg = f"unsupported content part type {short_repr(kind)}; expected {kinds}"
    else:
        msg = "missing" if kind is None else f"expected {kinds}, got {type_name(kind)}"
    rec.issues.append(Issue(f"{path}.type", msg))
    return None


def _system_turn(obj: dict[str, Any], rec: ParsedRecord) -> list[Turn]:
    system = _optional_str(obj, "system", rec)
    return [Turn("system", system)] if system else []


def _parse_plain(obj: dict[str, Any], rec: ParsedRecord) -> list[Turn] | None:
    before = len(rec.issues)
    system = _system_turn(obj, rec)
    prompt = _require_str(obj, "prompt", "prompt", rec)
    response = _require_str(obj, "response", "response", rec)
    if prompt is None or response is None or len(rec.issues) != before:
        return None
    return [*system, Turn("user", prompt), Turn("assistant", response, True)]


def _parse_alpaca(obj: dict[str, Any], rec: ParsedRecord) -> list[Turn] | None:
    before = len(rec.issues)
    system = _system_turn(obj, rec)
    instruction = _require_str(obj, "instruction", "instruction", rec)
    extra = _optional_str(obj, "input", rec)
    output = _require_str(obj, "output", "output", rec)
    if instruction is None or output is None or len(rec.issues) != before:
        return None
    user = f"{instruction}\n\n{extra}" if extra else instruction
    return [*system, Turn("user", user), Turn("assistant", output, True)]
