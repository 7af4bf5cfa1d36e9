"""Microsoft's own deployment manifests (../shared/corpus: Azure/iotedge e2e deployments, iotedge_config_cli
templates) through iothub_edge_modules: each is applied, a re-run writes nothing, check mode writes nothing, and
no secret it carries (registry passwords, Log Analytics keys, connection strings) shows in any output."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from helpers import counting, play, run_ok, task

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
MANIFESTS = sorted(list((CORPUS / "edge-manifests").glob("*.json"))
                   + list((CORPUS / "iotedge-config-cli-templates").glob("*/deployment*.json")))
SECRETS = {
    "<CR.Password>": "cr-Secr3t-Pa55word",
    "<LogAnalyticsSharedKey>": base64.b64encode(b"log-analytics-shared-key-32byte!").decode(),
    "<IoTHubConnectionString>": "HostName=h.azure-devices.net;SharedAccessKeyName=svc;SharedAccessKey="
                                + base64.b64encode(b"corpus-hub-key-0123456789abcdef").decode(),
    "<TestResultCoordinator.EventHubConnectionString>": "Endpoint=sb://ns.servicebus.windows.net/;"
                                                        "SharedAccessKeyName=listen;SharedAccessKey=ZXZlbnRodWIta2V5LTAx",
}


def filled(path: Path) -> dict:
    text = path.read_text()
    for placeholder, value in SECRETS.items():
        text = text.replace(placeholder, value)
    text = text.replace("<Container_Registry>", "myacr.azurecr.io").replace("<CR.Username>", "builduser")
    text = re.sub(r"<[A-Za-z_.]+>", "1", text)  # build numbers, durations, ids: any plain value
    doc = json.loads(text)
    return doc.get("modulesContent", doc.get("content", {}).get("modulesContent", doc))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.parent.name + "/" + p.stem for p in MANIFESTS])
def test_microsoft_manifest_applies_once_and_shows_no_secret(ansible, emulator, hub, tmp_path, path):
    assert MANIFESTS, "the corpus is missing: ../shared/corpus"
    hub.put_device("corpus-gw", {"deviceId": "corpus-gw", "capabilities": {"iotEdge": True}})
    content_file = tmp_path / "manifest.json"  # a file, as users keep them: no Ansible templating of {{...}}
    content_file.write_text(json.dumps({"modulesContent": filled(path)}))
    apply = task("t", "iothub_edge_modules", device_id="corpus-gw", content_file=str(content_file))
    with counting(emulator) as w:
        chk = run_ok(ansible, play(apply), check=True)
    assert w.writes == 0 and chk.task("t").changed
    first = run_ok(ansible, play(apply))
    assert first.task("t").changed
    with counting(emulator) as w:
        again = run_ok(ansible, play(apply))
    assert w.writes == 0 and not again.task("t").changed
    for run in (chk, first, again):
        for value in SECRETS.values():
            assert value not in run.output, (path.name, value)
