"""The edge_pki and edge_host roles on real Debian gateway hosts (tests/support/edge_host.py: debootstrap's bookworm
userland, one copy per host, reached by Ansible's chroot connection plugin), with identities in the emulator.

Microsoft's aziot packages cannot be downloaded here: the install path runs against a local apt repository of
STAND-IN packages with the real names and versions, whose iotedge/aziotctl/docker record their invocations (the
stand-in `config apply` parses the file and refuses a host name change while Edge containers exist, like the
product). apt, dpkg, users, owners and modes, the trust store and the handlers are real.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from support.ansible import REPO
from support.edge_host import GatewayHost, RepoServer, build_repo, chroot_available

THIRDPARTY = REPO / ".venv" / "collections"


@pytest.fixture(scope="session")
def standin_repo(tmp_path_factory):
    reason = chroot_available()
    assert reason is None, f"gateway hosts cannot run here: {reason}"
    assert (THIRDPARTY / "ansible_collections" / "community" / "crypto").is_dir(), \
        "community.crypto is missing: scripts/thirdparty-collections (make venv runs it)"
    server = RepoServer(build_repo(tmp_path_factory.mktemp("standin-repo")))
    yield server
    server.close()


@pytest.fixture
def hosts(tmp_path):
    made = []

    def make(*names):
        new = [GatewayHost.create(n, tmp_path / "hosts") for n in names]
        made.extend(new)
        return new
    yield make
    for h in made:
        h.remove()


class Fleet:
    """Runs playbooks with the gateway hosts in the inventory (group edge_gateways) next to localhost."""

    def __init__(self, ansible, tmp_path, repo: RepoServer):
        self.ansible = ansible
        self.tmp = tmp_path
        self.repo = repo
        self.pki = tmp_path / "pki"
        self.n = 0

    def host_vars(self) -> dict:
        return {"edge_host_apt_uri": self.repo.url, "edge_host_apt_suite": "./", "edge_host_apt_trusted": True,
                "edge_host_aziot_edge_version": "1.5.21-1", "edge_host_aziot_identity_service_version": "1.5.6-1"}

    def run(self, playbook, hosts, *, ok=True, extra_vars=None, check=False, host_vars=None):
        self.n += 1
        inv = self.tmp / f"inventory{self.n}.ini"
        lines = ["[edge_gateways]"] + [h.inventory_line(**(host_vars or {}).get(h.name, {})) for h in hosts]
        inv.write_text("\n".join(lines) + "\n")
        ev = dict(self.host_vars())
        ev.update(extra_vars or {})
        env = {"ANSIBLE_COLLECTIONS_PATH": f"{self.ansible.collections_root}:{THIRDPARTY}"}
        text = playbook if isinstance(playbook, str) else yaml.safe_dump(playbook, sort_keys=False)
        result = self.ansible.run(text, env=env, extra_vars=ev, check=check, args=["-i", str(inv)])
        if ok:
            assert result.rc == 0, result.output[-5000:]
        return result


@pytest.fixture
def fleet(ansible, tmp_path, standin_repo):
    return Fleet(ansible, tmp_path, standin_repo)


def pki_and_identity_play(gateways, identity=(), hub_auth=None):
    """Play 1: the chain on the controller and the gateways' identities in the hub (edge_gateway publishes the
    device connection string)."""
    tasks = [{"name": "Chain", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_pki"},
              "vars": {"edge_pki_dir": "{{ pki_dir }}", "edge_pki_gateways": list(gateways),
                       "edge_pki_identity_gateways": list(identity)}}]
    return {"name": "controller", "hosts": "localhost", "gather_facts": False, "tasks": tasks}


def host_play(**role_vars):
    return {"name": "gateway hosts", "hosts": "edge_gateways", "gather_facts": False,
            "tasks": [{"name": "Edge host", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_host"},
                       "vars": role_vars},
                      {"name": "Show edge_host_result", "ansible.builtin.debug": {"var": "edge_host_result"}}]}


def identity_task(device_id):
    return {"name": f"Identity of {device_id}", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_gateway"},
            "vars": {"edge_gateway_id": device_id, "edge_gateway_return_connection_string": True}}


def openssl(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def pubkey(path: Path, private: bool) -> str:
    args = ["pkey", "-in", str(path), "-pubout"] if private else ["x509", "-in", str(path), "-noout", "-pubkey"]
    return openssl(*args).stdout


def manual_playbook(fleet, device_id="gw-a", **role_vars):
    controller = pki_and_identity_play([device_id])
    controller["tasks"].append(identity_task(device_id))
    controller["tasks"].append({"name": "Share the connection string", "ansible.builtin.set_fact": {
        "gw_cs": "{{ edge_gateway_device_connection_string }}"}, "no_log": True})
    vars_ = {"edge_host_connection_string": "{{ hostvars['localhost'].gw_cs }}"}
    vars_.update(role_vars)
    return [controller, host_play(**vars_)]


def test_manual_sas_host_end_to_end_then_idempotent(fleet, hosts, hub, emulator):
    (gw,) = hosts("gw-a")
    ev = {"pki_dir": str(fleet.pki)}
    first = fleet.run(manual_playbook(fleet), [gw], extra_vars=ev)

    # The packages came from the repository through apt, pinned; their postinst made the real users.
    assert "aziot-edge" in gw.run("dpkg-query", "-W", "-f", "${Package}=${Version}\n", "aziot-edge").stdout
    assert gw.run("dpkg-query", "-W", "-f", "${Version}", "aziot-edge").stdout == "1.5.21-1"
    assert any(p.endswith(".deb") for p in fleet.repo.requests)

    # config.toml: what the hub says about the device, and nothing else.
    doc = tomllib.loads(gw.read("/etc/aziot/config.toml"))
    device = hub.get_device("gw-a").json()
    key = device["authentication"]["symmetricKey"]["primaryKey"]
    assert doc["provisioning"] == {"source": "manual", "connection_string":
                                   f"HostName={emulator.hostname};DeviceId=gw-a;SharedAccessKey={key}"}
    assert doc["hostname"] == "gw-a" and "parent_hostname" not in doc
    assert doc["agent"]["config"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.5"
    assert doc["edge_ca"] == {"cert": "file:///var/aziot/certs/gw-a.edge-ca.full-chain.pem",
                              "pk": "file:///var/aziot/secrets/gw-a.edge-ca.key.pem"}
    assert doc["trust_bundle_cert"] == "file:///var/aziot/certs/trust-bundle.pem"
    assert gw.owner_mode("/etc/aziot/config.toml") == ("root", "0o600")

    # Owners and modes IoT Edge needs.
    assert gw.owner_mode("/var/aziot/certs") == ("aziotcs", "0o755")
    assert gw.owner_mode("/var/aziot/secrets") == ("aziotks", "0o700")
    assert gw.owner_mode("/var/aziot/certs/gw-a.edge-ca.full-chain.pem") == ("aziotcs", "0o644")
    assert gw.owner_mode("/var/aziot/secrets/gw-a.edge-ca.key.pem") == ("aziotks", "0o600")

    # The chain: the edge CA verifies against the root and the intermediate; the key on the host is its key.
    pki = fleet.pki
    v = openssl("verify", "-CAfile", str(pki / "root.cert.pem"), "-untrusted", str(pki / "intermediate.cert.pem"),
                str(gw.path("/var/aziot/certs/gw-a.edge-ca.full-chain.pem")))
    assert v.returncode == 0 and ": OK" in v.stdout, v.stdout + v.stderr
    assert pubkey(gw.path("/var/aziot/secrets/gw-a.edge-ca.key.pem"), True) == \
        pubkey(gw.path("/var/aziot/certs/gw-a.edge-ca.full-chain.pem"), False) != ""

    # The root is in the OS trust store (update-ca-certificates really ran, in the host).
    root_pem = (pki / "root.cert.pem").read_text().strip()
    assert root_pem in gw.read("/etc/ssl/certs/ca-certificates.crt")

    # Applied once, with -c and the file; then checked.
    assert [c["argv"] for c in gw.applies()] == [["config", "apply", "-c", "/etc/aziot/config.toml"]]
    assert any(c["argv"][:1] == ["check"] for c in gw.calls("iotedge"))
    assert first.task("Write config.toml").changed

    # Second run: nothing changes, nothing is applied.
    calls = len(gw.calls())
    second = fleet.run(manual_playbook(fleet), [gw], extra_vars=ev)
    host_tasks = [t for t in second.tasks if t.changed and "Edge host" in t.task or t.changed and "edge_host" in t.task]
    assert host_tasks == [], [t.task for t in host_tasks]
    assert len(gw.applies()) == 1
    assert [c for c in gw.calls()[calls:] if c["argv"][:1] != ["check"]] == []


def test_check_mode_changes_nothing_and_a_new_parent_applies_once(fleet, hosts):
    (gw,) = hosts("gw-b")
    ev = {"pki_dir": str(fleet.pki)}
    fleet.run(manual_playbook(fleet, "gw-b"), [gw], extra_vars=ev)
    before = gw.read("/etc/aziot/config.toml")
    calls = len(gw.calls())

    checked = fleet.run(manual_playbook(fleet, "gw-b", edge_host_parent_hostname="gw-top"), [gw], extra_vars=ev,
                        check=True)
    assert checked.task("Write config.toml").changed  # predicted
    assert gw.read("/etc/aziot/config.toml") == before
    assert gw.calls()[calls:] == []  # no apply, no stop, no check (check mode)

    fleet.run(manual_playbook(fleet, "gw-b", edge_host_parent_hostname="gw-top"), [gw], extra_vars=ev)
    doc = tomllib.loads(gw.read("/etc/aziot/config.toml"))
    assert doc["parent_hostname"] == "gw-top"
    assert doc["agent"]["config"]["image"] == "$upstream:443/azureiotedge-agent:1.5"
    assert len(gw.applies()) == 2


def test_a_hostname_change_stops_edge_and_removes_its_containers_first(fleet, hosts):
    (gw,) = hosts("gw-c")
    ev = {"pki_dir": str(fleet.pki)}
    fleet.run(manual_playbook(fleet, "gw-c"), [gw], extra_vars=ev)
    assert gw.containers(), "the stand-in runtime started its containers at the apply"
    # Without the role's handling the product refuses: the stand-in does, like `iotedge config apply`.
    gw.path("/tmp/renamed.toml").write_text(gw.read("/etc/aziot/config.toml").replace('hostname = "gw-c"',
                                                                                      'hostname = "gw-c2"'))
    refused = gw.run("iotedge", "config", "apply", "-c", "/tmp/renamed.toml")
    assert refused.returncode != 0 and "Cannot apply config because the hostname" in refused.stderr

    calls = len(gw.calls())
    run = fleet.run(manual_playbook(fleet, "gw-c", edge_host_hostname="gw-c2"), [gw], extra_vars=ev)
    new = [(c["tool"], c["argv"][:2]) for c in gw.calls()[calls:] if c["argv"][:1] != ["check"]]
    assert new[0] == ("iotedge", ["system", "stop"])
    assert ("docker", ["ps", "-aq"]) in new and ("docker", ["rm", "-f"]) in new
    assert new[-1] == ("iotedge", ["config", "apply"])
    assert tomllib.loads(gw.read("/etc/aziot/config.toml"))["hostname"] == "gw-c2"
    result = [t for t in run.tasks if t.task.endswith("Show edge_host_result")][-1].result["edge_host_result"]
    assert result["edge_stopped"] is True and result["applied"] is True


def test_manual_x509_gateway_with_an_identity_certificate_from_edge_pki(fleet, hosts, hub, emulator):
    (gw,) = hosts("gw-x")
    controller = pki_and_identity_play(["gw-x"], identity=["gw-x"])
    controller["tasks"].append({"name": "X.509 identity in the hub", "fleet.azure_iot.iothub_device": {
        "device_id": "gw-x", "edge_enabled": True, "auth_type": "self_signed",
        "primary_thumbprint": "{{ edge_pki_result.gateways['gw-x'].identity_thumbprint }}"}})
    playbook = [controller, host_play(edge_host_provisioning="manual_x509",
                                      edge_host_iothub_hostname=emulator.hostname)]
    fleet.run(playbook, [gw], extra_vars={"pki_dir": str(fleet.pki)})

    doc = tomllib.loads(gw.read("/etc/aziot/config.toml"))
    assert doc["provisioning"] == {
        "source": "manual", "iothub_hostname": emulator.hostname, "device_id": "gw-x",
        "authentication": {"method": "x509", "identity_cert": "file:///var/aziot/certs/gw-x.identity.pem",
                           "identity_pk": "file:///var/aziot/secrets/gw-x.identity.key.pem"}}
    assert gw.owner_mode("/var/aziot/certs/gw-x.identity.pem") == ("aziotcs", "0o644")
    assert gw.owner_mode("/var/aziot/secrets/gw-x.identity.key.pem") == ("aziotks", "0o600")
    # The hub knows the certificate on the host by its thumbprint; the certificate chains to the root; its key
    # is the key on the host.
    der = subprocess.run(["openssl", "x509", "-in", str(gw.path("/var/aziot/certs/gw-x.identity.pem")),
                          "-outform", "DER"], capture_output=True, check=True).stdout
    tp = hub.get_device("gw-x").json()["authentication"]["x509Thumbprint"]["primaryThumbprint"]
    assert tp.upper() == hashlib.sha256(der).hexdigest().upper()
    v = openssl("verify", "-CAfile", str(fleet.pki / "root.cert.pem"), "-untrusted",
                str(fleet.pki / "intermediate.cert.pem"), str(gw.path("/var/aziot/certs/gw-x.identity.pem")))
    assert v.returncode == 0, v.stdout + v.stderr
    assert pubkey(gw.path("/var/aziot/secrets/gw-x.identity.key.pem"), True) == \
        pubkey(gw.path("/var/aziot/certs/gw-x.identity.pem"), False) != ""
    assert len(gw.applies()) == 1


def test_dps_symmetric_key_with_a_key_derived_from_the_group(fleet, hosts, emulator):
    (gw,) = hosts("gw-d")
    group_key = base64.b64encode(b"edge-host-group-key-0123456789ab").decode()
    controller = {"name": "controller", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Group enrollment", "fleet.azure_iot.dps_enrollment_group": {
            "enrollment_group_id": "edge-gateways", "attestation": "symmetric_key", "primary_key": group_key,
            "secondary_key": base64.b64encode(b"edge-host-group-key-secondary-01").decode(),
            "capabilities": {"iot_edge": True}}}]}
    playbook = [controller, host_play(edge_host_provisioning="dps_symmetric_key",
                                      edge_host_dps_id_scope=emulator.env["DPS_ID_SCOPE"],
                                      edge_host_dps_group_key=group_key)]
    run = fleet.run(playbook, [gw])
    doc = tomllib.loads(gw.read("/etc/aziot/config.toml"))
    expected = base64.b64encode(hmac.new(base64.b64decode(group_key), b"gw-d", hashlib.sha256).digest()).decode()
    assert doc["provisioning"] == {
        "source": "dps", "global_endpoint": "https://global.azure-devices-provisioning.net",
        "id_scope": emulator.env["DPS_ID_SCOPE"],
        "attestation": {"method": "symmetric_key", "registration_id": "gw-d", "symmetric_key": {"value": expected}}}
    assert "edge_ca" not in doc  # no PKI given: IoT Edge's quickstart CA
    assert len(gw.applies()) == 1
    # -vvv with --diff: neither the group key nor the derived device key is shown anywhere.
    assert expected not in run.output and group_key not in run.output
    diff = run.task("Write config.toml").result["diff"]
    assert "********" in (diff[0] if isinstance(diff, list) else diff)["after"]


class OfflineHost:
    name = "gw-usb"

    @staticmethod
    def inventory_line(**_hostvars):
        return "gw-usb ansible_connection=ssh ansible_host=gw-usb.invalid ansible_python_interpreter=/usr/bin/python3"


FAKE_CS = "HostName=plant.azure-devices.net;DeviceId=gw-e;SharedAccessKey=" + base64.b64encode(b"k" * 32).decode()


def _other_pki(fleet, gateway):
    """A second, unrelated chain: its edge CA does not chain to the first root."""
    return {"name": "other chain", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_pki"},
            "vars": {"edge_pki_dir": str(fleet.tmp / "other-pki"), "edge_pki_gateways": [gateway],
                     "edge_pki_name": "someone else"}}


BAD = [
    ("missing connection string", {}, "provisioning=manual needs connection_string"),
    ("wrong provisioning variant", {"edge_host_provisioning": "dps", "edge_host_connection_string": FAKE_CS},
     "edge_host_provisioning must be one of"),
    ("parent not in the tree", {"edge_host_connection_string": FAKE_CS, "edge_host_parent_hostname": "gw-elsewhere",
                                "edge_host_known_hostnames": ["gw-top", "gw-e"]},
     "edge_host_parent_hostname gw-elsewhere is not the host name of a gateway of the tree"),
    ("certificate that does not chain", {"edge_host_connection_string": FAKE_CS,
                                         "edge_host_edge_ca_cert": "{{ other }}/gateways/gw-e/edge-ca.full-chain.cert.pem",
                                         "edge_host_edge_ca_pk": "{{ other }}/gateways/gw-e/edge-ca.key.pem"},
     "edge_host_edge_ca_cert does not chain to edge_host_trust_bundle_cert"),
    ("DPS variable with manual", {"edge_host_connection_string": FAKE_CS, "edge_host_dps_id_scope": "0ne0001"},
     "dps_id_scope: not used by provisioning=manual"),
    ("pre-1.2 key in settings", {"edge_host_connection_string": FAKE_CS,
                                 "edge_host_settings": {"certificates": {"device_ca_cert": "/x"}}},
     "keys of the pre-1.2 configuration"),
]


@pytest.mark.parametrize("case, role_vars, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_fails_before_anything_is_written_to_the_host(fleet, hosts, case, role_vars, message):
    (gw,) = hosts("gw-e")
    controller = pki_and_identity_play(["gw-e"])
    controller["tasks"].insert(0, _other_pki(fleet, "gw-e"))  # first: edge_pki_result is the last chain's
    run = fleet.run([controller, host_play(**role_vars)], [gw], ok=False,
                    extra_vars={"pki_dir": str(fleet.pki), "other": str(fleet.tmp / "other-pki")})
    assert run.rc != 0
    assert message in run.output, run.output[-3000:]
    # Nothing reached the host: no package, no file, no command.
    assert not gw.exists("/etc/aziot") and not gw.exists("/var/aziot") and gw.calls() == []
    assert not gw.exists("/etc/apt/sources.list.d/fleet-azure-iot-microsoft.sources")


def test_offline_bundle_is_rerunnable_and_its_script_configures_a_host(fleet, hosts, tmp_path):
    bundle = tmp_path / "bundle"
    offline = OfflineHost()  # reachable only by USB: the playbook never connects to it
    ev = {"pki_dir": str(fleet.pki)}
    playbook = [pki_and_identity_play(["gw-usb"]),
                host_play(edge_host_connection_string=FAKE_CS.replace("gw-e", "gw-usb"),
                          edge_host_bundle_dir=str(bundle), edge_host_parent_hostname="gw-top")]
    first = fleet.run(playbook, [offline], extra_vars=ev)
    root = bundle / "gw-usb"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["apply.sh", "config.toml", "files/var/aziot/certs/gw-usb.edge-ca.full-chain.pem",
                     "files/var/aziot/certs/trust-bundle.pem", "files/var/aziot/secrets/gw-usb.edge-ca.key.pem"]
    assert oct((root / "files/var/aziot/secrets/gw-usb.edge-ca.key.pem").stat().st_mode & 0o777) == "0o600"
    assert oct((root / "config.toml").stat().st_mode & 0o777) == "0o600"
    assert first.task("Write config.toml").changed

    second = fleet.run(playbook, [offline], extra_vars=ev)
    assert [t.task for t in second.tasks if t.changed and "edge_host" in t.task] == []

    # The bundle on a real host (as a USB stick would bring it): the packages are there, then apply.sh.
    (gw,) = hosts("gw-usb")
    gw.path("/etc/apt/sources.list.d/standin.list").write_text(f"deb [trusted=yes] {fleet.repo.url} ./\n")
    assert gw.run("apt-get", "update").returncode == 0
    assert gw.run("apt-get", "install", "-y", "aziot-edge").returncode == 0
    shutil_copy = subprocess.run(["cp", "-a", str(root), str(gw.path("/root/bundle"))], check=True)
    assert shutil_copy.returncode == 0
    r = gw.run("sh", "/root/bundle/apply.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert gw.read("/etc/aziot/config.toml") == (root / "config.toml").read_text()
    assert gw.owner_mode("/var/aziot/secrets/gw-usb.edge-ca.key.pem") == ("aziotks", "0o600")
    assert gw.owner_mode("/var/aziot/certs/gw-usb.edge-ca.full-chain.pem") == ("aziotcs", "0o644")
    assert (fleet.pki / "root.cert.pem").read_text().strip() in gw.read("/etc/ssl/certs/ca-certificates.crt")
    assert [c["argv"] for c in gw.applies()] == [["config", "apply", "-c", "/etc/aziot/config.toml"]]


def test_three_layer_nested_fleet_from_one_tree(fleet, hosts, hub):
    """playbooks/edge_fleet.yml: the tree edge_hierarchy takes provisions identities, deployments, the chain and the
    hosts, top-down by layer; each lower layer's parent_hostname is its parent host's name."""
    top, mid, low = hosts("l3-top", "l4-mid", "l5-low")
    names = {"l3-top": "top.plant.example", "l4-mid": "mid.plant.example", "l5-low": "low.plant.example"}
    host_vars = {h: {"edge_host_hostname": n} for h, n in names.items()}
    tree = [{"device_id": "l3-top", "children": [{"device_id": "l4-mid", "children": [
        {"device_id": "l5-low", "children": [{"device_id": "l5-sensor"}]}]}]}]
    ev = {"edge_fleet_tree": tree, "edge_fleet_pki_dir": str(fleet.pki)}
    playbook = (REPO / "playbooks" / "edge_fleet.yml").read_text()
    fleet.run(playbook, [top, mid, low], extra_vars=ev, host_vars=host_vars)

    docs = {h.name: tomllib.loads(h.read("/etc/aziot/config.toml")) for h in (top, mid, low)}
    assert "parent_hostname" not in docs["l3-top"]
    assert docs["l4-mid"]["parent_hostname"] == "top.plant.example"
    assert docs["l5-low"]["parent_hostname"] == "mid.plant.example"
    assert docs["l3-top"]["agent"]["config"]["image"] == "mcr.microsoft.com/azureiotedge-agent:1.5"
    assert docs["l5-low"]["agent"]["config"]["image"] == "$upstream:443/azureiotedge-agent:1.5"
    for h in (top, mid, low):
        assert docs[h.name]["hostname"] == names[h.name]
        assert f"DeviceId={h.name};" in docs[h.name]["provisioning"]["connection_string"]
        v = openssl("verify", "-CAfile", str(fleet.pki / "root.cert.pem"), "-untrusted",
                    str(fleet.pki / "intermediate.cert.pem"),
                    str(h.path(f"/var/aziot/certs/{h.name}.edge-ca.full-chain.pem")))
        assert v.returncode == 0, v.stdout + v.stderr
        assert len(h.applies()) == 1
    # Top-down: each layer was applied after the one above it.
    applied_at = [h.path("/var/lib/standin/applied.json").stat().st_mtime_ns for h in (top, mid, low)]
    assert applied_at == sorted(applied_at)
    # The hub holds the same hierarchy.
    assert hub.get_device("l5-low").json()["parentScopes"] == [hub.get_device("l4-mid").json()["deviceScope"]]

    # Nothing changes on a second run: no apply anywhere.
    fleet.run(playbook, [top, mid, low], extra_vars=ev, host_vars=host_vars)
    assert [len(h.applies()) for h in (top, mid, low)] == [1, 1, 1]

    # The middle gateway gets a new host name: it is stopped and re-applied, the layer below follows its parent
    # (one apply), the top is not touched.
    host_vars["l4-mid"]["edge_host_hostname"] = "mid2.plant.example"
    fleet.run(playbook, [top, mid, low], extra_vars=ev, host_vars=host_vars)
    assert [len(h.applies()) for h in (top, mid, low)] == [1, 2, 2]
    assert tomllib.loads(low.read("/etc/aziot/config.toml"))["parent_hostname"] == "mid2.plant.example"
    assert any(c["argv"][:2] == ["system", "stop"] for c in mid.calls("iotedge"))


def _pki_play(pki_dir, **extra):
    v = {"edge_pki_dir": str(pki_dir), "edge_pki_gateways": ["gw-1", "gw-2"], "edge_pki_identity_gateways": ["gw-2"]}
    v.update(extra)
    return [{"name": "pki", "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Chain", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_pki"}, "vars": v},
        {"name": "Show edge_pki_result", "ansible.builtin.debug": {"var": "edge_pki_result"}}]}]


def _files(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_edge_pki_is_idempotent_renews_in_time_and_never_rekeys(fleet, tmp_path):
    pki = tmp_path / "chain"
    checked = fleet.run(_pki_play(pki), [], check=True)
    assert not pki.exists() or _files(pki) == {}  # check mode writes nothing
    assert [t for t in checked.tasks if t.task.endswith("Show edge_pki_result")][-1].result["edge_pki_result"]["changed"]

    fleet.run(_pki_play(pki), [])
    first = _files(pki)
    for gw in ("gw-1", "gw-2"):
        v = openssl("verify", "-CAfile", str(pki / "root.cert.pem"), "-untrusted", str(pki / "intermediate.cert.pem"),
                    str(pki / "gateways" / gw / "edge-ca.full-chain.cert.pem"))
        assert v.returncode == 0, v.stdout + v.stderr
        assert pubkey(pki / "gateways" / gw / "edge-ca.key.pem", True) == \
            pubkey(pki / "gateways" / gw / "edge-ca.cert.pem", False) != ""
    assert oct((pki / "root.key.pem").stat().st_mode & 0o777) == "0o600"
    for name in ("root.key.pem", "intermediate.key.pem", "gateways/gw-1/edge-ca.key.pem"):
        assert (pki / name).read_text().strip()[:60] not in "".join(
            t.result.__repr__() for t in checked.tasks)  # keys never in any result

    second = fleet.run(_pki_play(pki), [])
    assert _files(pki) == first
    result = [t for t in second.tasks if t.task.endswith("Show edge_pki_result")][-1].result["edge_pki_result"]
    assert result["changed"] is False and result["renewed"] == []
    assert fleet.run(_pki_play(pki), [], check=True).rc == 0 and _files(pki) == first

    # Short validity: the edge CAs (365 days) end within a 400-day window; they are re-issued, keys kept; the CAs
    # above (1825 and 3650 days) are not.
    renew = fleet.run(_pki_play(pki, edge_pki_renew_before_days=400, edge_pki_edge_ca_days=500,
                                edge_pki_identity_days=500), [])
    result = [t for t in renew.tasks if t.task.endswith("Show edge_pki_result")][-1].result["edge_pki_result"]
    assert sorted(result["renewed"]) == ["gw-1 edge CA", "gw-2 edge CA", "gw-2 identity"]
    after = _files(pki)
    assert after["gateways/gw-1/edge-ca.cert.pem"] != first["gateways/gw-1/edge-ca.cert.pem"]
    for key in [k for k in first if k.endswith("key.pem")]:
        assert after[key] == first[key], f"{key} was re-keyed"
    assert after["root.cert.pem"] == first["root.cert.pem"]
    assert after["intermediate.cert.pem"] == first["intermediate.cert.pem"]
    v = openssl("verify", "-CAfile", str(pki / "root.cert.pem"), "-untrusted", str(pki / "intermediate.cert.pem"),
                str(pki / "gateways/gw-1/edge-ca.full-chain.cert.pem"))
    assert v.returncode == 0
    end = openssl("x509", "-in", str(pki / "gateways/gw-1/edge-ca.cert.pem"), "-noout", "-checkend", str(450 * 86400))
    assert end.returncode == 0  # the new one lasts 500 days
