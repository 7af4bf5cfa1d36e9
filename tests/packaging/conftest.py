"""Make ``ansible_collections.fleet.azure_iot`` importable for plain pytest runs (ansible-test units does
this itself): a link tree in the temporary directory points back at the repository."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if not (REPO.parent.name == "fleet" and REPO.parents[1].name == "ansible_collections"):
    tag = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"fleet-azure-iot-{tag}"
    link = root / "ansible_collections" / "fleet" / "azure_iot"
    if not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO, target_is_directory=True)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
