"""The collection as Ansible users and AWX meet it: ansible-doc, the Galaxy artifact, the execution
environment, the AWX credential type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("*.py"))
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())
# Modules that run on an IoT Edge gateway host and call no service: no action group, no service rights.
HOST_MODULES = [m for m in MODULES if m.startswith("edge_host_")]


def run(cmd, **kw):
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", **kw.pop("env", {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)


def test_changelog_records_the_release_galaxy_yml_names():
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    releases = yaml.safe_load((REPO / "changelogs" / "changelog.yaml").read_text())["releases"]
    assert version in releases, f"galaxy.yml says {version}; run antsibull-changelog release"
    assert f"v{version}" in (REPO / "CHANGELOG.rst").read_text()


def test_doc_fragments_are_private():
    fragments = sorted(p.name for p in (REPO / "plugins" / "doc_fragments").glob("*.py"))
    assert fragments and all(name.startswith("_") for name in fragments), fragments


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_every_module(collections_root, module):
    r = run([str(BIN / "ansible-doc"), "--json", f"fleet.azure_iot.{module}"],
            env={"ANSIBLE_COLLECTIONS_PATH": str(collections_root)})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)[f"fleet.azure_iot.{module}"]
    assert doc["examples"].strip() and doc["return"], module
    attrs = doc["doc"]["attributes"]
    assert attrs["check_mode"]["support"] == "full"
    if module in HOST_MODULES:
        assert "action_group" not in attrs and attrs["diff_mode"]["support"] in ("full", "N/A", "none"), module
    else:
        assert attrs["diff_mode"]["support"] in ("full", "N/A")
        assert attrs["action_group"]["membership"], module
    assert attrs["idempotent"]["support"] in ("full", "partial", "none"), module
    for name, opt in doc["doc"]["options"].items():
        assert opt.get("description"), f"{module}.{name} has no description"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_documents_the_rights_it_needs(collections_root, module):
    r = run([str(BIN / "ansible-doc"), "--json", f"fleet.azure_iot.{module}"],
            env={"ANSIBLE_COLLECTIONS_PATH": str(collections_root)})
    notes = " ".join(json.loads(r.stdout)[f"fleet.azure_iot.{module}"]["doc"].get("notes", []))
    assert "Rights:" in notes, module
    if module in HOST_MODULES:
        assert "root on the gateway host" in notes, module
    if module.startswith("iothub_"):
        assert "RegistryRead" in notes and "ServiceConnect" in notes, module


def test_ansible_doc_text_shows_the_device_id_characters(collections_root):
    """Markup inside C() ended at the first ')': the rendered text must list every allowed character."""
    r = run([str(BIN / "ansible-doc"), "fleet.azure_iot.iothub_device"],
            env={"ANSIBLE_COLLECTIONS_PATH": str(collections_root), "COLUMNS": "400"})
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "- : . + % _ # * ? ! ( ) , = @ ; $ '" in text, text[:2000]


@pytest.mark.parametrize("role", ROLES)
def test_ansible_doc_renders_every_role(collections_root, role):
    r = run([str(BIN / "ansible-doc"), "-t", "role", "--json", f"fleet.azure_iot.{role}"],
            env={"ANSIBLE_COLLECTIONS_PATH": str(collections_root)})
    assert r.returncode == 0, r.stderr
    main = json.loads(r.stdout)[f"fleet.azure_iot.{role}"]["entry_points"]["main"]
    assert main["description"] and all(o.get("description") for o in main["options"].values())


def test_action_groups_list_every_module():
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    groups = runtime["action_groups"]
    assert sorted(groups["iothub"] + groups["iotcentral"] + groups["dps"] + HOST_MODULES) == MODULES
    assert HOST_MODULES == ["edge_host_apply", "edge_host_check", "edge_host_config"]
    # the roles' internal connection groups hold only modules of their service's group
    assert set(groups["role_connection"]) <= set(groups["iothub"])
    assert set(groups["role_dps_connection"]) <= set(groups["dps"])
    assert runtime["requires_ansible"] == ">=2.18.0"


def test_galaxy_build_produces_a_clean_artifact(tmp_path):
    r = run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO), "--output-path", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    artifact = next(tmp_path.glob("fleet-azure_iot-*.tar.gz"))
    names = tarfile.open(artifact).getnames()
    assert "plugins/modules/iothub_device_bulk.py" in names and "roles/edge_hierarchy/meta/argument_specs.yml" in names
    assert "meta/execution-environment.yml" in names and "meta/ee-requirements.txt" in names
    assert not [n for n in names if n.startswith(("emulator", ".venv", "tests/output", ".bench", ".demo", "scripts"))]
    manifest = json.loads(tarfile.open(artifact).extractfile("MANIFEST.json").read())
    assert manifest["collection_info"]["namespace"] == "fleet" and manifest["collection_info"]["name"] == "azure_iot"


def test_ansible_builder_creates_a_build_context_from_the_tarball(tmp_path):
    """The execution environment of docs/awx.md, as written there: built from the collection tarball."""
    builder = BIN / "ansible-builder"
    if not builder.exists():
        pytest.skip("ansible-builder is installed by requirements-dev.txt")
    doc = (REPO / "docs" / "awx.md").read_text()
    definition = yaml.safe_load(doc.split("# ee/execution-environment.yml\n", 1)[1].split("```", 1)[0])
    ee = tmp_path / "ee"
    ee.mkdir()
    r = run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(ee), str(REPO)])
    assert r.returncode == 0, r.stderr
    tarball = next(ee.glob("fleet-azure_iot-*.tar.gz")).name
    definition["additional_build_files"][0]["src"] = tarball  # the version galaxy.yml says today
    definition["dependencies"]["galaxy"]["collections"][0]["name"] = f"collections/{tarball}"
    (ee / "execution-environment.yml").write_text(yaml.safe_dump(definition))
    (ee / "ee-requirements.txt").write_text((REPO / "meta" / "ee-requirements.txt").read_text())
    r = run([str(builder), "create", "-f", "execution-environment.yml", "-c", "context",
             "--output-filename", "Containerfile"], cwd=ee)
    assert r.returncode == 0, r.stdout + r.stderr
    context = ee / "context"
    assert "awx-ee" in (context / "Containerfile").read_text()
    assert (context / "_build" / "collections" / tarball).is_file()
    reqs = (context / "_build" / "requirements.txt").read_text()
    wanted = [line.split(">")[0].split("=")[0].strip() for line in (REPO / "meta" / "ee-requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert wanted and all(name in reqs for name in wanted), (wanted, reqs)
    galaxy = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert galaxy["collections"][0] == {"name": f"collections/{tarball}", "type": "file"}


def test_awx_credential_type_injects_what_the_modules_read():
    from ansible_collections.fleet.azure_iot.plugins.module_utils._central import CENTRAL_ARGS
    from ansible_collections.fleet.azure_iot.plugins.module_utils._module import IOTHUB_ARGS
    ct = yaml.safe_load((REPO / "docs" / "awx" / "credential_type.yml").read_text())
    injected = set(ct["injectors"]["env"])
    fields = {f["id"] for f in ct["inputs"]["fields"]}
    for var, template in ct["injectors"]["env"].items():
        assert template.strip("{} ") in fields, var
    read = {name for spec in (IOTHUB_ARGS, CENTRAL_ARGS) for opt in spec.values()
            if opt.get("fallback") for name in opt["fallback"][1]}
    ca = {"IOTHUB_CA_PATH", "IOTCENTRAL_CA_PATH"}  # files, not credentials: set in the EE or the playbook
    assert injected - {"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"} == read - ca
    from azure.identity._constants import EnvironmentVariables  # the names EnvironmentCredential reads
    assert {"AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"} <= set(EnvironmentVariables.CLIENT_SECRET_VARS)
    secret_fields = {f["id"] for f in ct["inputs"]["fields"] if f.get("secret")}
    assert {"iothub_connection_string", "iotcentral_api_token", "azure_client_secret"} <= secret_fields


def test_galaxy_importer_accepts_the_artifact(tmp_path):
    """galaxy-importer as Galaxy runs it, minus ansible-test (which it runs in a container; `make test` runs
    ansible-test sanity locally instead): ansible-doc, ansible-lint, changelog, metadata checks."""
    pytest.importorskip("galaxy_importer")
    r = run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO), "--output-path", str(tmp_path)])
    assert r.returncode == 0, r.stderr
    artifact = next(tmp_path.glob("fleet-azure_iot-*.tar.gz"))
    r = run([sys.executable, "-m", "galaxy_importer.main", "--print-result", str(artifact)], cwd=tmp_path,
            env={"PATH": f"{BIN}:{os.environ['PATH']}", "GALAXY_IMPORTER_RUN_ANSIBLE_TEST": "False",
                 "GALAXY_IMPORTER_REQUIRE_V1_OR_GREATER": "True", "GALAXY_IMPORTER_CHECK_CHANGELOG": "True"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    log = r.stdout + r.stderr
    assert "ERROR" not in log and "WARNING" not in log, [line for line in log.splitlines() if "WARN" in line or "ERROR" in line]
    result = json.loads((tmp_path / "importer_result.json").read_text())
    assert result["requires_ansible"] == ">=2.18.0"
    assert {c["name"] for c in result["contents"]} >= {"iothub_device", "iothub_device_bulk", "edge_hierarchy"}
