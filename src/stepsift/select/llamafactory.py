"""A LLaMA-Factory `dataset_info.json` entry for a selection (`select --llamafactory-info`).

The selection is written byte-for-byte in the input's format; the entry tells LLaMA-Factory
how to read that file, so `dataset: NAME` (with `dataset_dir:` the output's folder) trains
on it directly. The entry is derived from the records actually selected, never guessed.

What this relies on, from LLaMA-Factory itself (hiyouga/LLaMA-Factory):

- `data/README.md`: an entry has `file_name` (relative to `dataset_dir`, the folder holding
  `dataset_info.json`), `formatting` ("alpaca" default, or "sharegpt"), `columns` (alpaca:
  prompt/query/response/system/images; sharegpt: messages/system/images) and, for sharegpt
  only, `tags` (role_tag, content_tag, user_tag, assistant_tag, system_tag). The OpenAI-style
  example there is `messages` + role/content/user/assistant/system.
- `src/llamafactory/data/parser.py` (`DatasetAttr`, `get_dataset_list`): with a `columns`
  object, every column it leaves out becomes None, so only columns the file has are named
  here (a named column missing from the file is a KeyError in the converter).
- `src/llamafactory/data/converter.py`: `SharegptDatasetConverter` reads
  `example[columns["messages"]]`; a first message whose `role_tag` value is `system_tag` is
  the system prompt; the rest must be `user_tag` at even and `assistant_tag` at odd indices
  (0-based) with an even count, else the example is skipped with "Skipping this abnormal
  example". `AlpacaDatasetConverter` builds the user turn as "\\n".join(prompt, query).
  `_find_medias` joins each image path with `media_dir` (default: `dataset_dir`) and keeps
  the path as written when no file is there; a single path (not a list) is accepted.
- `src/llamafactory/extras/constants.py` `FILEEXT2TYPE`: a data file is loaded by its
  extension; .json and .jsonl both go to the `json` loader (JSON array or JSON lines),
  .parquet to the `parquet` loader (a Parquet input's selection is written as Parquet).
- `src/llamafactory/data/mm_plugin.py` `_regularize_images`: an image given as a dict
  with `bytes` is opened from those bytes, so images embedded in Parquet rows need no file.
- `src/llamafactory/data/mm_plugin.py` `_validate_input`: the number of images of an example
  must equal the number of `<image>` placeholders in its messages, else a ValueError.

Checked end to end by loading entries written here with llamafactory 0.9.5's own
`get_dataset_list` and converters on `datasets` 4.0.0 (the newest its requirements allow).

Policy: every check runs before anything is written. A selection LLaMA-Factory cannot read as
one dataset is refused (`LlamaFactoryError`, a ValueError: exit code 2) and neither the
selection nor the entry is written, so a rerun without the option still works.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stepsift.data import Record, is_table, write_records
from stepsift.data.atomic import atomic_write_text
from stepsift.data.formats import PLACEHOLDER, type_name

from .table import TablePlan, check_table_out, plan_table_selection, write_plan
from .topk import Keep, Policy, Selection, plan_selection

DATASET_INFO = "dataset_info.json"
# Extensions LLaMA-Factory reads with its `json` loader (FILEEXT2TYPE).
JSON_SUFFIXES = (".json", ".jsonl")
_IMAGE_KEYS = ("image", "images")
_USER_VALUES = ("human", "user")  # what stepsift accepts as a user turn's role value
_ASSISTANT_VALUES = ("gpt", "assistant")
_EXAMPLES = 3  # how many offending records an error names


class LlamaFactoryError(ValueError):
    """The selection cannot be registered for LLaMA-Factory; nothing was written."""


@dataclass
class DatasetInfo:
    """The entry written, where, and what the user should know about it."""

    name: str
    entry: dict[str, Any]
    path: Path  # the dataset_info.json written
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        folder = self.path.parent
        return (
            f"LLaMA-Factory entry {self.name!r} written to {self.path}; in the training YAML "
            f"use `dataset: {self.name}` (with `dataset_dir: {folder}`)"
        )


# ---- the entry ------------------------------------------------------------------------


@dataclass
class _Facts:
    """What one selected record needs from an entry, read from its raw JSON."""

    formatting: str
    columns: dict[str, str]  # without images; must agree across records
    tags: dict[str, str]  # role/content tags (sharegpt); must agree across records
    user_tag: str | None = None
    assistant_tag: str | None = None
    optional_columns: dict[str, str] = field(default_factory=dict)  # named if any record has
    image_key: str | None = None
    image_kind: str | None = None  # JSON type of the image field: "string" or "array"
    image_paths: list[str] = field(default_factory=list)
    embedded_images: int = 0  # {"bytes", "path"} structs with bytes: LLaMA-Factory opens those
    problem: str | None = None  # why LLaMA-Factory cannot read this record
    loss_false: bool = False  # an ms-swift `"loss": false` turn
    unread_system: bool = False  # a top-level "system" next to a conversation


def _images(obj: dict[str, Any], facts: _Facts) -> None:
    for key in _IMAGE_KEYS:
        value = obj.get(key)
        if value is None:
            continue
        facts.image_key, facts.image_kind = key, type_name(value)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict) and item.get("bytes") is not None:
                facts.embedded_images += 1  # read from its bytes; its path is never opened
                continue
            path = item.get("path") if isinstance(item, dict) else item
            if isinstance(path, str):
                facts.image_paths.append(path)


def _count_images(texts: Sequence[Any], facts: _Facts) -> None:
    """LLaMA-Factory refuses an example whose images and placeholders differ in number."""
    n_images = len(facts.image_paths) + facts.embedded_images
    placeholders = sum(t.count(PLACEHOLDER) for t in texts if isinstance(t, str))
    if n_images != placeholders and facts.problem is None:
        facts.problem = (
            f"{n_images} image(s) but {placeholders} {PLACEHOLDER} placeholder(s); "
            f"LLaMA-Factory needs one {PLACEHOLDER} per image in the text"
        )


def _conversation_facts(obj: dict[str, Any], fmt: str) -> _Facts:
    if fmt == "llava":
        key, role_key, content_key = "conversations", "from", "value"
    else:
        key, role_key, content_key = "messages", "role", "content"
    facts = _Facts(
        "sharegpt", {"messages": key}, {"role_tag": role_key, "content_tag": content_key}
    )
    _images(obj, facts)
    facts.unread_system = obj.get("system") is not None
    messages = obj[key]
    facts.loss_false = any(m.get("loss") is False for m in messages)
    if any(not isinstance(m.get(content_key), str) for m in messages):
        facts.problem = (
            "message content is a list of parts; LLaMA-Factory's sharegpt format needs "
            f"string content with {PLACEHOLDER} placeholders"
        )
        return facts
    roles = [m[role_key] for m in messages]
    users = {r for r in roles if r in _USER_VALUES}
    assistants = {r for r in roles if r in _ASSISTANT_VALUES}
    if len(users) > 1 or len(assistants) > 1:
        facts.problem = f"mixes role values {sorted(users | assistants)} in one conversation"
        return facts
    facts.user_tag = next(iter(users), None)
    facts.assistant_tag = next(iter(assistants), None)
    body = messages[1:] if roles and roles[0] == "system" else messages
    texts = [m[content_key] for m in body]
    turns = [m[role_key] for m in body]
    expected = [facts.user_tag if i % 2 == 0 else facts.assistant_tag for i in range(len(turns))]
    if not turns or turns != expected or len(turns) % 2:
        facts.problem = (
            "turns must be user/assistant pairs after an optional first system turn, got "
            + ", ".join(roles)
        )
    _count_images(texts, facts)
    return facts


def _single_turn_facts(obj: dict[str, Any], fmt: str) -> _Facts:
    if fmt == "alpaca":
        base = {"prompt": "instruction", "response": "output"}
        texts = [obj.get("instruction"), obj.get("input"), obj.get("output")]
    else:  # plain
        base = {"prompt": "prompt", "response": "response"}
        texts = [obj.get("prompt"), obj.get("response")]
    facts = _Facts("alpaca", base, {})
    if fmt == "alpaca" and obj.get("input") is not None:
        facts.optional_columns["query"] = "input"
    if obj.get("system") is not None:
        facts.optional_columns["system"] = "system"
    _images(obj, facts)
    _count_images(texts, facts)
    return facts


def _facts(record: Record) -> _Facts:
    obj = json.loads(record.raw)
    if record.format in ("llava", "sharegpt", "openai"):
        return _conversation_facts(obj, record.format)
    if record.format in ("alpaca", "plain"):
        return _single_turn_facts(obj, record.format)
    raise LlamaFactoryError(f"record format {record.format!r} has no LLaMA-Factory mapping")


def _ids(records: Sequence[Record]) -> str:
    shown = ", ".join(repr(r.id) for r in records[:_EXAMPLES])
    more = f" and {len(records) - _EXAMPLES} more" if len(records) > _EXAMPLES else ""
    return f"{shown}{more}"


def _one(values: dict[Any, list[Record]], what: str) -> Any:
    """The single value all selected records agree on, else an error naming examples."""
    if len(values) > 1:
        groups = "; ".join(
            f"{value if isinstance(value, str) else dict(value)} in {len(recs)} (e.g. id "
            f"{recs[0].id!r})"
            for value, recs in values.items()
        )
        raise LlamaFactoryError(
            f"the selected records mix {what}, but one LLaMA-Factory entry describes one: {groups}"
        )
    return next(iter(values), None)


def _column_types(records: Sequence[Record]) -> None:
    """LLaMA-Factory loads the file with `datasets`' JSON loader, which (in the datasets
    <= 4.0.0 that LLaMA-Factory 0.9.5 pins) needs each top-level field to hold one JSON type
    across records; null, a missing key and int next to float are fine. Checked by loading
    such files with datasets 4.0.0: "Column(/id) changed from number to string"."""
    seen: dict[str, dict[str, Record]] = {}
    for record in records:
        for key, value in json.loads(record.raw).items():
            if value is None:
                continue
            kind = "number" if type_name(value) in ("integer", "number") else type_name(value)
            seen.setdefault(key, {}).setdefault(kind, record)
    for key, kinds in seen.items():
        if len(kinds) > 1:
            which = ", ".join(f"{k} (e.g. id {r.id!r})" for k, r in kinds.items())
            raise LlamaFactoryError(
                f"field {key!r} holds different JSON types across the selected records: "
                f"{which}; LLaMA-Factory's loader (datasets, Arrow) needs one type per field"
            )


def dataset_info_entry(records: Sequence[Record], file_name: str) -> tuple[dict, list[str]]:
    """The `dataset_info.json` entry that reads `records` (written as `file_name`), and any
    warnings. Raises `LlamaFactoryError` when LLaMA-Factory cannot read them as one dataset."""
    if not records:
        raise LlamaFactoryError("nothing was selected, so there is no dataset to register")
    facts = [(_facts(r), r) for r in records]
    bad = [(f, r) for f, r in facts if f.problem]
    if bad:
        first, rec = bad[0]
        raise LlamaFactoryError(
            f"LLaMA-Factory would not read {len(bad)} of the {len(records)} selected "
            f"record(s) ({_ids([r for _, r in bad])}); e.g. id {rec.id!r} ({rec.source}): "
            f"{first.problem}"
        )

    def group(key) -> dict[Any, list[Record]]:
        out: dict[Any, list[Record]] = {}
        for f, r in facts:
            value = key(f)
            if value is not None:
                out.setdefault(value, []).append(r)
        return out

    formatting = _one(group(lambda f: f.formatting), "formats (alpaca and sharegpt)")
    columns = dict(_one(group(lambda f: tuple(f.columns.items())), "field layouts"))
    tags = dict(_one(group(lambda f: tuple(f.tags.items())), "role fields"))
    user_tag = _one(group(lambda f: f.user_tag), "user role values")
    assistant_tag = _one(group(lambda f: f.assistant_tag), "assistant role values")
    image_key = _one(group(lambda f: f.image_key), "image fields ('image' and 'images')")
    _one(group(lambda f: f.image_kind), "image field types (a path and a list of paths)")
    _column_types(records)

    for f, _ in facts:
        for column, source in f.optional_columns.items():
            columns.setdefault(column, source)
    if image_key:
        columns["images"] = image_key
    entry: dict[str, Any] = {"file_name": file_name, "formatting": formatting, "columns": columns}
    if formatting == "sharegpt":
        tags.update(
            user_tag=user_tag or "user",
            assistant_tag=assistant_tag or "assistant",
            system_tag="system",
        )
        entry["tags"] = tags

    warnings = []
    n_loss = sum(f.loss_false for f, _ in facts)
    if n_loss:
        warnings.append(
            f'{n_loss} selected record(s) mark turns "loss": false (ms-swift); LLaMA-Factory '
            "ignores that and trains on every assistant turn"
        )
    n_system = sum(f.unread_system for f, _ in facts)
    if n_system and formatting == "sharegpt":
        warnings.append(
            f"{n_system} selected record(s) have a top-level 'system' field, which stepsift "
            'did not read; it is not mapped (add "system": "system" to the entry\'s columns '
            "to train with it)"
        )
    return entry, warnings


# ---- images ---------------------------------------------------------------------------


def relative_image_warning(records: Sequence[Record], out: Path, image_base: Path) -> str | None:
    """A warning when relative image paths would resolve elsewhere for LLaMA-Factory: it joins
    them with its `media_dir`, by default the dataset folder (the output's folder), while
    stepsift resolved them against `image_base` (--image-root, else the input's folder)."""
    relative = [
        (path, r) for r in records for path in _facts(r).image_paths if not os.path.isabs(path)
    ]
    if not relative:
        return None
    base, folder = Path(os.path.abspath(image_base)), Path(os.path.abspath(out.parent))
    if os.path.realpath(base) == os.path.realpath(folder):
        return None
    path, record = relative[0]
    n = len({r.id for _, r in relative})
    return (
        f"{n} selected record(s) use relative image paths (e.g. {path!r}, id {record.id!r}), "
        f"found under {base}; LLaMA-Factory looks them up under its media_dir, by default "
        f"the dataset folder {folder}: set `media_dir: {base}` in the training YAML"
    )


# ---- dataset_info.json ----------------------------------------------------------------


def check_name(name: str) -> str:
    """A dataset name LLaMA-Factory can be given back: `dataset: a,b` splits on commas and
    strips spaces."""
    if not name or name != name.strip() or "," in name:
        raise LlamaFactoryError(
            f"--llamafactory-info {name!r}: give a non-empty name without commas or "
            "surrounding spaces (LLaMA-Factory splits `dataset:` on commas)"
        )
    return name


def read_dataset_info(path: Path) -> dict[str, Any]:
    """The entries of an existing `dataset_info.json` (empty when there is none)."""
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LlamaFactoryError(
            f"{path}: not valid JSON ({e}); fix or move it, it was left unchanged"
        ) from None
    if not isinstance(info, dict):
        raise LlamaFactoryError(
            f"{path}: expected a JSON object of dataset entries, got {type_name(info)}; "
            "it was left unchanged"
        )
    return info


def write_dataset_info(path: Path, name: str, entry: dict[str, Any]) -> None:
    """Add or replace `name` in `path`, keeping every other entry; atomic (temp + rename)."""
    info = read_dataset_info(path)
    info[name] = entry  # an existing name keeps its place
    atomic_write_text(path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")


# ---- select + entry -------------------------------------------------------------------


def select_with_dataset_info(
    candidates: Path,
    scores: Path,
    keep: Keep | str,
    out: Path,
    name: str,
    drop_harmful: bool = False,
    skip_invalid: bool = False,
    order: str = "input",
    image_root: Path | None = None,
    policy: Policy | None = None,
) -> tuple[Selection, DatasetInfo]:
    """`select`, plus a LLaMA-Factory entry `name` in `dataset_info.json` next to `out`.

    Every check (name, output name, existing dataset_info.json, the selected records) runs
    before the selection or the entry is written.
    """
    out = Path(out)
    check_name(name)
    info_path = out.absolute().parent / DATASET_INFO
    if out.name == DATASET_INFO:
        raise LlamaFactoryError(f"--out {out}: that name is for the LLaMA-Factory entry itself")
    table = is_table(candidates)
    if table:
        check_table_out(out)  # LLaMA-Factory reads *.parquet with its parquet loader
    elif out.suffix not in JSON_SUFFIXES:  # LLaMA-Factory's lookup is case-sensitive
        raise LlamaFactoryError(
            f"--out {out}: LLaMA-Factory picks its loader by the file extension; "
            "name the output *.jsonl or *.json"
        )
    read_dataset_info(info_path)  # refuse an unreadable one before writing anything
    args = (candidates, scores, keep, drop_harmful, skip_invalid, order, image_root, policy)
    if table:
        table_plan = plan_table_selection(*args)
        selection, records = table_plan.selection, _text_only(table_plan)
    else:
        plan = plan_selection(*args)
        selection, records = plan.selection, plan.records
    entry, warnings = dataset_info_entry(records, out.name)
    base = Path(image_root) if image_root is not None else Path(candidates).parent
    image_warning = relative_image_warning(records, out, base)
    if image_warning:
        warnings.append(image_warning)
    if table:
        write_plan(table_plan, out)
    else:
        write_records(plan.records, out, container=plan.container)
    write_dataset_info(info_path, name, entry)
    return selection, DatasetInfo(name, entry, info_path, warnings)


def _text_only(plan: TablePlan, chunk: int = 1024) -> list[Record]:
    """The kept rows as records without their image bytes (the entry needs only their
    fields), read a chunk at a time so that the kept images are never all held."""
    out: list[Record] = []
    for start in range(0, len(plan.positions), chunk):
        loaded = plan.index.load(plan.positions[start : start + chunk])
        out += [replace(r, images=()) for r in loaded]
    return out
