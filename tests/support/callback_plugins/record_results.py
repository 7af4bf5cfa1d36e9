# Test-only callback: writes every task result of a playbook run as JSON lines to $RECORD_RESULTS_FILE,
# so integration tests can assert on what each task returned.
from __future__ import annotations

DOCUMENTATION = """
name: record_results
type: aggregate
short_description: write task results to a JSON-lines file for tests
description: [Test helper of fleet.azure_iot.]
"""

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("RECORD_RESULTS_FILE")

    def _write(self, status, result):
        if not self._path:
            return
        entry = {
            "status": status,
            "task": result._task.get_name(),
            "action": result._task.action,
            "host": result._host.get_name(),
            "result": result._result,
        }
        with open(self._path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")

    def v2_runner_on_ok(self, result):
        self._write("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._write("failed", result)

    def v2_runner_on_skipped(self, result):
        self._write("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._write("unreachable", result)
