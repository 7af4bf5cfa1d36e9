# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: one string object for values a million lines repeat (the fleet file's lines, an
export job's lines), never for the values each line has of its own (ids, etags, keys): interning those would keep
a million strings alive in the interpreter's table for the life of the task."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, FrozenSet


def share(value: Any, max_chars: int, intern=sys.intern) -> Any:
    """VALUE, as the one string object kept for it when it is a string of at most MAX_CHARS."""
    return intern(value) if isinstance(value, str) and len(value) <= max_chars else value


def shared_pairs(unique: FrozenSet[str], max_chars: int) -> Callable[[Any], Dict[str, Any]]:
    """A json ``object_pairs_hook``: names shared, and short values shared except those of the UNIQUE names."""
    def hook(pairs, intern=sys.intern) -> Dict[str, Any]:
        return {intern(k): v if k in unique else share(v, max_chars) for k, v in pairs}
    return hook
