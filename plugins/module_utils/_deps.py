# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: where httpx is imported (pydantic: ``_pydantic``, azure-identity: ``_auth``).

Imports are guarded so that ansible-test's import and validate-modules sanity tests, which run without
them, can still load every module; modules call ``check_requirements(module)`` before doing any work.
azure-identity is not imported here: ``_auth`` imports it only when Entra ID is used; pydantic is imported by
``_pydantic``, which only the IoT Central and configuration modules load.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback

from ansible.module_utils.basic import missing_required_lib

# httpx's package __init__ imports its command-line client (click, rich, pygments when they are installed: about
# 50 ms of every task) only to offer ``httpx.main``; a None entry makes that import fail fast, and httpx falls back
# to its own stub.  Nothing here uses the CLI.
sys.modules.setdefault("httpx._main", None)


def _import_httpx():
    """httpx and its transport (httpcore), imported with anyio and trio hidden: httpcore imports them (about
    25 ms) only for its async locks, and every client here is synchronous.  They are hidden for this one import
    and restored after it, so anything else in the process can still import them."""
    hidden = [name for name in ("anyio", "trio") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        import httpx as lib  # pylint: disable=import-outside-toplevel
        import httpcore  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return lib


try:
    httpx = _import_httpx()
except ImportError:  # pragma: no cover - exercised by the sanity import test
    httpx = None
    HTTPX_IMPORT_ERROR = traceback.format_exc()
else:
    HTTPX_IMPORT_ERROR = None


def check_requirements(module) -> None:
    """Fail the task with Ansible's standard message when a run-time requirement is missing.  pydantic is looked
    for, not imported: only the modules that validate with it (``_pydantic``) pay for its import."""
    if httpx is None:
        module.fail_json(msg=missing_required_lib("httpx"), exception=HTTPX_IMPORT_ERROR)
    if importlib.util.find_spec("pydantic") is None:
        module.fail_json(msg=missing_required_lib("pydantic (>= 2)"))
