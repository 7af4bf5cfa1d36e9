"""The official azure-iot-hub SDK (IoTHubRegistryManager) as an independent client of the emulator.

Each expectation is a fact of iot-api.md §9 (the SDK's method -> HTTP mapping) and the sections it cites.
The SDK is a test-only dependency; the collection never imports it.
"""

from __future__ import annotations

import base64

import pytest

azure_iot_hub = pytest.importorskip("azure.iot.hub", reason="azure-iot-hub (with six) is installed by requirements-dev.txt")
from azure.iot.hub import IoTHubRegistryManager  # noqa: E402
from azure.iot.hub.models import ExportImportDevice, QuerySpecification  # noqa: E402
from msrest.exceptions import HttpOperationError  # noqa: E402

KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


@pytest.fixture
def manager(emulator, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_path)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    return IoTHubRegistryManager.from_connection_string(emulator.connection_string)


def status_of(exc: HttpOperationError) -> int:
    return exc.response.status_code


def test_create_get_update_with_etag_and_stale(manager):
    created = manager.create_device_with_sas("sdk-1", None, None, "enabled")
    assert created.device_id == "sdk-1" and created.status == "enabled"
    assert len(base64.b64decode(created.authentication.symmetric_key.primary_key)) == 32  # generated (§1.3)
    got = manager.get_device("sdk-1")
    assert got.etag == created.etag and got.generation_id == created.generation_id
    keys = got.authentication.symmetric_key
    updated = manager.update_device_with_sas("sdk-1", got.etag, keys.primary_key, keys.secondary_key, "disabled",
                                             status_reason="maintenance")
    assert updated.status == "disabled" and updated.status_reason == "maintenance"
    assert updated.authentication.symmetric_key.primary_key == keys.primary_key
    assert updated.etag != got.etag
    with pytest.raises(HttpOperationError) as stale:
        manager.update_device_with_sas("sdk-1", got.etag, keys.primary_key, keys.secondary_key, "enabled")
    assert status_of(stale.value) == 412
    assert stale.value.response.headers["iothub-errorcode"] == "PreconditionFailed"


def test_create_existing_is_409(manager):
    manager.create_device_with_sas("dup", KEY_A, KEY_B, "enabled")
    with pytest.raises(HttpOperationError) as exc:
        manager.create_device_with_sas("dup", KEY_A, KEY_B, "enabled")
    assert status_of(exc.value) == 409


def test_update_with_sdk_defaults_regenerates_keys(manager):
    """§9 caution: update_device_with_sas(pk=None, sk=None) is a full replace that mints new keys."""
    manager.create_device_with_sas("regen", KEY_A, KEY_B, "enabled")
    after = manager.update_device_with_sas("regen", "*", None, None, "enabled")
    assert after.authentication.symmetric_key.primary_key not in (KEY_A, None)


def test_update_of_edge_device_without_scope_is_refused(manager):
    """§9 caution: the SDK omits deviceScope when None; the emulator refuses to drop an edge device's scope."""
    gw = manager.create_device_with_sas("edge-gw", None, None, "enabled", iot_edge=True)
    assert gw.device_scope.startswith("ms-azure-iot-edge://edge-gw-")
    with pytest.raises(HttpOperationError) as exc:
        manager.update_device_with_sas("edge-gw", gw.etag, None, None, "disabled", iot_edge=True)
    assert status_of(exc.value) == 400
    keys = gw.authentication.symmetric_key
    ok = manager.update_device_with_sas("edge-gw", gw.etag, keys.primary_key, keys.secondary_key, "disabled",
                                        iot_edge=True, device_scope=gw.device_scope)
    assert ok.device_scope == gw.device_scope and ok.status == "disabled"


def test_leaf_and_nested_edge(manager):
    gw = manager.create_device_with_sas("gw", None, None, "enabled", iot_edge=True)
    leaf = manager.create_device_with_sas("leaf", None, None, "enabled", device_scope=gw.device_scope)
    assert leaf.parent_scopes == [gw.device_scope]
    child = manager.create_device_with_sas("child-gw", None, None, "enabled", iot_edge=True,
                                           parent_scopes=[gw.device_scope])
    assert child.parent_scopes == [gw.device_scope] and child.device_scope != gw.device_scope


def test_x509_and_ca(manager):
    d = manager.create_device_with_x509("x509", "a" * 40, "b" * 40, "enabled")
    assert d.authentication.type == "selfSigned"
    assert d.authentication.x509_thumbprint.primary_thumbprint == "a" * 40
    ca = manager.create_device_with_certificate_authority("ca", "enabled")
    assert ca.authentication.type == "certificateAuthority"


def test_delete_and_404(manager):
    d = manager.create_device_with_sas("gone", None, None, "enabled")
    with pytest.raises(HttpOperationError) as stale:
        manager.delete_device("gone", etag="c3RhbGU=")
    assert status_of(stale.value) == 412
    manager.delete_device("gone", etag=d.etag)
    with pytest.raises(HttpOperationError) as missing:
        manager.get_device("gone")
    assert status_of(missing.value) == 404
    assert missing.value.response.headers["iothub-errorcode"] == "DeviceNotFound"
    with pytest.raises(HttpOperationError) as again:
        manager.delete_device("gone")
    assert status_of(again.value) == 404


def test_bulk_success_partial_and_duplicates(manager):
    ok = manager.bulk_create_or_update_devices(
        [ExportImportDevice(id=f"b{i}", import_mode="create", status="enabled") for i in range(5)])
    assert ok.is_successful and ok.errors == []
    partial = manager.bulk_create_or_update_devices([
        ExportImportDevice(id="b0", import_mode="create"), ExportImportDevice(id="b9", import_mode="create")])
    assert partial.is_successful is False  # a 400 does not raise in the SDK (§4)
    assert [(e.device_id, e.error_code) for e in partial.errors] == [("b0", "DeviceAlreadyExists")]
    assert manager.get_device("b9").device_id == "b9"
    dup = manager.bulk_create_or_update_devices([ExportImportDevice(id="x", import_mode="create"),
                                                 ExportImportDevice(id="x", import_mode="delete")])
    assert dup.is_successful is False
    assert [(e.device_id, e.error_code) for e in dup.errors] == [("x", "DeviceDefinedMultipleTimes")]
    with pytest.raises(HttpOperationError):
        manager.get_device("x")  # nothing applied
    with pytest.raises(HttpOperationError) as many:
        manager.bulk_create_or_update_devices([ExportImportDevice(id=f"m{i}", import_mode="create") for i in range(101)])
    assert status_of(many.value) == 413


def test_query_paging_and_get_devices(manager):
    manager.bulk_create_or_update_devices([ExportImportDevice(id=f"q{i:02d}", import_mode="create") for i in range(15)])
    seen, token = [], None
    while True:
        page = manager.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), token, 4)
        assert page.type == "Twin"
        seen += [t.device_id for t in page.items]
        token = page.continuation_token
        if not token:
            break
    assert seen == [f"q{i:02d}" for i in range(15)]
    assert all(t.authentication_type == "sas" for t in page.items)
    listed = manager.get_devices(10)
    assert len(listed) == 10 and listed[0].authentication.symmetric_key.primary_key


def test_twin_update_through_sdk(manager):
    from azure.iot.hub.models import Twin
    manager.create_device_with_sas("tw", None, None, "enabled")
    twin = manager.get_twin("tw")
    patched = manager.update_twin("tw", Twin(tags={"site": "a"}), twin.etag)
    assert patched.tags == {"site": "a"}


def test_module_calls_of_the_sdk(manager):
    """create_module_with_sas, get_module, update_module_twin, delete_module (iot-api-2.md §1)."""
    manager.create_device_with_sas("mod-dev", None, None, "enabled")
    created = manager.create_module_with_sas("mod-dev", "analytics", None, KEY_A, KEY_B)
    assert created.module_id == "analytics" and created.authentication.symmetric_key.primary_key == KEY_A
    got = manager.get_module("mod-dev", "analytics")
    assert got.etag == created.etag and got.managed_by is None
    twin = manager.get_module_twin("mod-dev", "analytics")
    from azure.iot.hub.models import Twin, TwinProperties
    patched = manager.update_module_twin("mod-dev", "analytics", Twin(tags={"owner": "x"},
                                                                      properties=TwinProperties(desired={"t": 1})),
                                         twin.etag)
    assert patched.tags == {"owner": "x"} and patched.properties.desired["t"] == 1
    with pytest.raises(HttpOperationError) as stale:
        manager.update_module_twin("mod-dev", "analytics", Twin(tags={"owner": "y"}), twin.etag)
    assert status_of(stale.value) == 412
    updated = manager.update_module_with_sas("mod-dev", "analytics", "someone", got.etag, KEY_B, KEY_A)
    assert updated.managed_by == "someone" and updated.etag != got.etag
    assert [m.module_id for m in manager.get_modules("mod-dev")] == ["analytics"]
    manager.delete_module("mod-dev", "analytics")
    with pytest.raises(HttpOperationError) as gone:
        manager.get_module("mod-dev", "analytics")
    assert status_of(gone.value) == 404
