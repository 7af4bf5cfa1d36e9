"""Helpers for integration tests: build plays, and measure writes through the emulator's counters."""

from __future__ import annotations

import contextlib

import yaml


def play(*tasks: dict, module_defaults: dict | None = None, vars: dict | None = None) -> str:
    p = {"name": "test", "hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}
    if module_defaults:
        p["module_defaults"] = module_defaults
    if vars:
        p["vars"] = vars
    return yaml.safe_dump([p], sort_keys=False)


def task(name: str, module: str, register: str | None = None, **args) -> dict:
    t = {"name": name, f"fleet.azure_iot.{module}": args}
    if register:
        t["register"] = register
    return t


def device_task(name: str, **args) -> dict:
    return task(name, "iothub_device", **args)


class WriteCounter:
    """Counts the emulator's writes across a block: ``with writes(emulator) as w: ...; w.writes``."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.start = None
        self.end = None

    def delta(self, key: str) -> int:
        return self.end[key] - self.start[key]

    @property
    def writes(self) -> int:
        return self.delta("write_requests")

    @property
    def registry_writes(self) -> int:
        return self.delta("registry_writes")


@contextlib.contextmanager
def counting(emulator):
    w = WriteCounter(emulator)
    w.start = emulator.stats()
    yield w
    w.end = emulator.stats()


def run_ok(ansible, *plays_or_tasks, **kw):
    """Run a playbook (its YAML text, or tasks to put in one play) and assert it passed, showing the end of its
    output when it did not."""
    text = plays_or_tasks[0] if len(plays_or_tasks) == 1 and isinstance(plays_or_tasks[0], str) else play(*plays_or_tasks)
    r = ansible.run(text, **kw)
    assert r.rc == 0, r.output[-4000:]
    return r
