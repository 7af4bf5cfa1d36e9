# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: iothub_device_bulk's ``devices_file``: a fleet read from a file on the host that runs
the task, line by line, never through Ansible's templating or the module's arguments.

- JSON Lines (``.jsonl``, ``.ndjson``, ``.json``): one entry per line, the keys of a ``devices`` entry (a line may
  also be a bare JSON string, a device id); blank lines are skipped.
- CSV (``.csv``): a header row of column names: the entry keys (``device_id``, ``status``, ``parent``,
  ``edge_enabled``, ...), ``tags.<name>`` and ``desired_properties.<path>`` (dots nest) for twin values.  An empty
  cell is an option not given (not managed).  ``edge_enabled`` takes true/false (also yes/no, 1/0).  A twin cell
  is JSON when it reads as JSON (a number, true, false, null - which removes the key -, an object, an array, a
  quoted string), else the text itself.
- A ``.gz`` suffix is read through gzip; a UTF-8 byte order mark and CRLF line ends are accepted.

Every problem names the file, the line and the fix, before any request.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from typing import Any, Dict, Iterator, Optional, Tuple

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError
from ansible_collections.fleet.azure_iot.plugins.module_utils._shard import HUB_KEY, hub_entry
from ansible_collections.fleet.azure_iot.plugins.module_utils._strings import share, shared_pairs

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
CSV_OPTIONS = ("device_id", "state", "status", "status_reason", "auth_type", "primary_key", "secondary_key",
               "primary_thumbprint", "secondary_thumbprint", "edge_enabled", "parent", "rotate_keys", HUB_KEY)
TRUE, FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def file_format(path: str, declared: Optional[str]) -> str:
    if declared:
        return declared
    name = path[:-3] if path.endswith(".gz") else path
    fmt = FORMATS.get(os.path.splitext(name)[1].lower())
    if fmt is None:
        raise InputError(f"devices_file: {path!r} ends neither in .jsonl nor .csv (optionally .gz); set "
                         "devices_file_format to jsonl or csv")
    return fmt


def _open(path: str):
    if not os.path.exists(path):
        raise InputError(f"devices_file: {path!r} does not exist on the host that runs the task")
    if os.path.isdir(path):
        raise InputError(f"devices_file: {path!r} is a directory; give the fleet file")
    try:
        raw = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
        return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"devices_file: {path!r} cannot be read: {exc.strerror or exc}") from None


def read_entries(path: str, fmt: Optional[str] = None) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(label, entry) per device of the file, streamed: the label is ``<file>:<line>``."""
    fmt = file_format(path, fmt)
    with _open(path) as fh:
        try:
            if fmt == "jsonl":
                yield from _jsonl(path, fh)
            else:
                yield from _csv(path, fh)
        except (UnicodeDecodeError, EOFError, OSError) as exc:  # not UTF-8, a truncated .gz
            raise InputError(f"devices_file: {path!r} cannot be read as UTF-8 text ({exc})") from None


SHARED_MAX_CHARS = 64  # values up to this long are shared between lines (a status reason, a tag, a parent's id)
UNSHARED = frozenset(("device_id", "primary_key", "secondary_key", "primary_thumbprint", "secondary_thumbprint"))


def _share(value: Any) -> Any:
    return share(value, SHARED_MAX_CHARS)


# A line's names and short values shared (a million lines repeat a handful of status reasons, tag values and
# parent ids); ids, keys and thumbprints are each line's own.
_shared_pairs = shared_pairs(UNSHARED, SHARED_MAX_CHARS)


def _jsonl(path: str, fh) -> Iterator[Tuple[str, Dict[str, Any]]]:
    for number, line in enumerate(fh, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            entry = json.loads(text, object_pairs_hook=_shared_pairs)
        except ValueError as exc:
            raise InputError(f"devices_file: {path}:{number}: not a JSON object ({exc.msg}); each line is one "
                             'device entry such as {"device_id": "sensor-1", "tags": {"site": "plant-7"}}') from None
        if isinstance(entry, str):
            entry = {"device_id": entry}
        if not isinstance(entry, dict):
            raise InputError(f"devices_file: {path}:{number}: a line must be a JSON object (a device entry) or a "
                             "device id string")
        yield f"{path}:{number}", entry


def _cell(value: str) -> Any:
    try:
        return _share(json.loads(value, object_pairs_hook=_shared_pairs))
    except ValueError:
        return _share(value)


def _set_path(target: Dict[str, Any], parts, value: Any) -> None:
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


def _csv(path: str, fh) -> Iterator[Tuple[str, Dict[str, Any]]]:
    reader = csv.reader(fh)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip() for h in header]
    for column in header:
        section, _dot, rest = column.partition(".")
        if column in CSV_OPTIONS or (section in ("tags", "desired_properties") and rest):
            continue
        raise InputError(f"devices_file: {path}:1: unknown column {column!r}; columns are the device options "
                         f"({', '.join(CSV_OPTIONS)}) and tags.<name> or desired_properties.<path>")
    if "device_id" not in header:
        raise InputError(f"devices_file: {path}:1: the header has no device_id column")
    for row in reader:
        number = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InputError(f"devices_file: {path}:{number}: {len(row)} cells for {len(header)} columns; quote a "
                             "value that holds a comma")
        entry: Dict[str, Any] = {}
        for column, cell in zip(header, row):
            if cell == "":
                continue  # an empty cell: not given, not managed
            section, _dot, rest = column.partition(".")
            if section in ("tags", "desired_properties") and rest:
                _set_path(entry.setdefault(section, {}), rest.split("."), _cell(cell))
            elif column == "edge_enabled":
                low = cell.strip().lower()
                if low not in TRUE + FALSE:
                    raise InputError(f"devices_file: {path}:{number}: edge_enabled is {cell!r}; use true or false")
                entry[column] = low in TRUE
            else:
                entry[column] = cell if column in UNSHARED else _share(cell)
        yield f"{path}:{number}", entry


def for_hub(pairs, hub: Optional[str]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """The (label, entry) pairs of one hub's share (``hub_key_filter``), without their hub key.  Without a hub
    filter, a line that names a hub is an error: the file is sharded, and converging every hub's lines into one
    hub is never meant."""
    for where, entry in pairs:
        if hub is None:
            if isinstance(entry, dict) and HUB_KEY in entry:
                raise InputError(f"devices_file: {where}: hub: the file names a hub for its devices; set "
                                 "hub_key_filter to the name of the hub this task converges (the lines of other hubs "
                                 "are skipped)")
            yield where, entry
            continue
        kept = hub_entry(entry, hub)
        if kept is not None:
            yield where, kept
        elif not isinstance(entry, dict) or not entry.get(HUB_KEY):
            raise InputError(f"devices_file: {where}: the line names no hub; with hub_key_filter every line says "
                             "which hub it goes to")
