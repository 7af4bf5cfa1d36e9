"""Install the collection into a temporary collections path and run real ansible-playbook processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTION_CONTENT = ("galaxy.yml", "meta", "plugins", "roles", "README.md", "requirements.txt", "playbooks")
CALLBACKS = Path(__file__).resolve().parent / "callback_plugins"


def install_collection(root: Path) -> Path:
    """Copy the collection to ROOT/ansible_collections/fleet/azure_iot (a real path, as ansible-test wants)."""
    dest = root / "ansible_collections" / "fleet" / "azure_iot"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in COLLECTION_CONTENT:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return root


@dataclass
class TaskResult:
    status: str
    task: str
    action: str
    result: dict

    @property
    def changed(self) -> bool:
        return bool(self.result.get("changed"))

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    tasks: list[TaskResult] = field(default_factory=list)

    def task(self, name: str) -> TaskResult:
        found = [t for t in self.tasks if t.task == name or t.task.endswith(f" : {name}")]  # role tasks are prefixed
        assert found, f"no task named {name!r}; tasks: {[t.task for t in self.tasks]}\n{self.stdout[-3000:]}"
        return found[-1]

    def changed_tasks(self) -> list[str]:
        return [t.task for t in self.tasks if t.changed]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def _secret_values(emulator) -> set[str]:
    s = emulator.secrets()
    values = set(s["device_keys"] + s["policy_keys"] + s["central_device_keys"] + s["document_secrets"])
    for token in s["central_tokens"]:
        values.add(token)
        values.add(token.split("sig=")[1].split("&")[0])  # the signature alone
    return {v for v in values if v and len(v) >= 16}


class AnsibleRunner:
    """Runs ansible-playbook.  Every run is -vvv with --diff unless a test says otherwise, and afterwards no
    secret the emulator holds (device and module keys, policy keys, Central tokens and credentials) may appear in
    stdout, stderr or any task result, and no SAS token at all, unless the run asked for secrets."""

    def __init__(self, collections_root: Path, work_dir: Path, base_env: dict[str, str], emulator=None):
        self.collections_root = collections_root
        self.work_dir = work_dir
        self.base_env = base_env
        self.emulator = emulator
        self.counter = 0

    def run(self, playbook: str | list | Path, *, env: dict | None = None, extra_vars: dict | None = None,
            check: bool = False, diff: bool = True, verbosity: int = 3, timeout: float = 900,
            args: list[str] | None = None, allow_secrets: bool = False) -> PlaybookRun:
        before = _secret_values(self.emulator) if self.emulator is not None else set()
        result = self._run(playbook, env=env, extra_vars=extra_vars, check=check, diff=diff, verbosity=verbosity,
                           timeout=timeout, args=args)
        if self.emulator is not None:
            text = result.stdout + result.stderr + json.dumps([t.result for t in result.tasks], default=str)
            # A real token, not the format shown in help texts ("sr=...&sig=...").
            assert not re.search(r"SharedAccessSignature sr=(?!\.\.\.)", text), "a SAS token appeared in the output"
            if not allow_secrets:
                leaked = [v[:6] + "..." for v in (before | _secret_values(self.emulator)) if v in text]
                assert not leaked, f"secrets leaked into the output of {playbook if isinstance(playbook, Path) else 'a playbook'}: {leaked}"
        return result

    def _run(self, playbook, *, env, extra_vars, check, diff, verbosity, timeout, args) -> PlaybookRun:
        self.counter += 1
        run_dir = self.work_dir / f"run{self.counter:03d}"
        run_dir.mkdir(parents=True)
        if isinstance(playbook, Path):
            pb_path = playbook
        else:
            pb_path = run_dir / "playbook.yml"
            pb_path.write_text(playbook if isinstance(playbook, str) else yaml.safe_dump(playbook, sort_keys=False))
        record = run_dir / "results.jsonl"
        inventory = run_dir / "inventory.ini"
        inventory.write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
        e = dict(self.base_env)
        e.update({
            "ANSIBLE_COLLECTIONS_PATH": str(self.collections_root),
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACKS),
            "ANSIBLE_CALLBACKS_ENABLED": "record_results",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_LOCAL_TEMP": str(run_dir / "tmp"),
            "ANSIBLE_HOME": str(self.work_dir / "ansible_home"),
            "ANSIBLE_GATHERING": "explicit",
            "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "RECORD_RESULTS_FILE": str(record),
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        e.update(env or {})
        cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(pb_path)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        if extra_vars:
            xv = run_dir / "extra_vars.json"
            xv.write_text(json.dumps(extra_vars))
            cmd += ["-e", f"@{xv}"]
        cmd += args or []
        proc = subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        tasks = []
        if record.exists():
            for line in record.read_text().splitlines():
                d = json.loads(line)
                tasks.append(TaskResult(d["status"], d["task"], d["action"], d["result"]))
        (run_dir / "stdout.txt").write_text(proc.stdout)
        (run_dir / "stderr.txt").write_text(proc.stderr)
        return PlaybookRun(proc.returncode, proc.stdout, proc.stderr, tasks)
