# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: IoT Edge deployment manifests (``modulesContent``), pure functions.

- ``load_manifest``: a manifest given as a dict or a JSON/YAML file, in any of the forms in use (the bare
  ``modulesContent``, ``{"modulesContent": ...}``, or a whole ``{"content": {"modulesContent": ...}}`` as
  ``az iot edge`` files have it).
- ``check_manifest``: what the runtime accepts, before any request (iot-api-2.md §2.7): ``$edgeAgent`` schema 1.x
  up to 1.1, ``$edgeHub`` schema 1.0-1.3 with routes (from 1.1) and ``storeAndForwardConfiguration``, module names,
  non-empty image strings, at most 50 modules, each module's desired properties within the twin's 32 KB.
- ``send_form`` / ``compare_form``: ``createOptions`` is a JSON *string* in the twin, split into 512-character
  chunks (``createOptions01``...) when long; the same options given as a dict or as a string in another spelling
  compare equal.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleet.azure_iot.plugins.module_utils._models import TWIN_SECTION_LIMITS, section_size
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ManifestError

RUNTIME_MODULES = ("$edgeAgent", "$edgeHub")
MODULE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-:.+%_#*?!(),=@;']{0,63}$")
EDGE_HUB_SCHEMAS = ("1.0", "1.1", "1.2", "1.3")
MAX_MODULES = 50
CHUNK = 512
MAX_CHUNKS = 100


def load_document(path: str, option: str = "content_file") -> Any:
    """A JSON or YAML file (what deployment files are written in)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ManifestError(f"{option}: cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError:
        try:
            import yaml  # ansible-core's own dependency
            return yaml.safe_load(text)
        except Exception as exc:  # pylint: disable=broad-except
            raise ManifestError(f"{option}: {path!r} is neither JSON nor YAML: {exc}") from None


def load_manifest(content: Optional[Dict[str, Any]], content_file: Optional[str] = None,
                  option: str = "content") -> Dict[str, Any]:
    """The ``modulesContent`` of a manifest given inline or in a JSON or YAML file."""
    if content_file is not None:
        option = "content_file"
        content = load_document(content_file)
    if not isinstance(content, dict):
        raise ManifestError(f"{option}: the manifest must be a dictionary with modulesContent")
    if isinstance(content.get("content"), dict):
        content = content["content"]
    if isinstance(content.get("modulesContent"), dict):
        content = content["modulesContent"]
    if "$edgeAgent" not in content:
        raise ManifestError(f"{option}: no $edgeAgent in modulesContent; a deployment manifest sets $edgeAgent "
                            "(runtime, systemModules, modules) and $edgeHub (routes)")
    return copy.deepcopy(content)


def _desired(mc: Dict[str, Any], name: str) -> Dict[str, Any]:
    part = mc.get(name)
    desired = part.get("properties.desired") if isinstance(part, dict) else None
    if not isinstance(desired, dict):
        raise ManifestError(f"modulesContent.{name}: needs a properties.desired object")
    return desired


def _version(value: Any) -> Tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(value).split("."))
    except ValueError:
        return (-1,)


def _create_options(settings: Dict[str, Any], where: str) -> Any:
    """The createOptions of a module's settings as an object (joined from chunks, parsed from JSON)."""
    raw = settings.get("createOptions")
    if raw is None:
        return None
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise ManifestError(f"{where}.createOptions must be a JSON object or a JSON string")
    text = raw + "".join(settings.get(f"createOptions{i:02d}", "") for i in range(1, MAX_CHUNKS))
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ManifestError(f"{where}.createOptions is not valid JSON: {exc}") from None


def check_manifest(mc: Dict[str, Any]) -> None:
    agent = _desired(mc, "$edgeAgent")
    hub = _desired(mc, "$edgeHub")
    sv = _version(agent.get("schemaVersion"))
    if sv[0] != 1 or sv > (1, 1):
        raise ManifestError(f"modulesContent.$edgeAgent: schemaVersion {agent.get('schemaVersion')!r}: the edge agent "
                            "accepts 1.0 and 1.1")
    if not isinstance(agent.get("runtime"), dict):
        raise ManifestError("modulesContent.$edgeAgent: needs runtime (type docker, settings)")
    system = agent.get("systemModules")
    if not isinstance(system, dict) or not {"edgeAgent", "edgeHub"} <= set(system):
        raise ManifestError("modulesContent.$edgeAgent: needs systemModules.edgeAgent and systemModules.edgeHub")
    modules = agent.get("modules") or {}
    if not isinstance(modules, dict):
        raise ManifestError("modulesContent.$edgeAgent.modules must be a dictionary of modules")
    if len(modules) > MAX_MODULES:
        raise ManifestError(f"modulesContent.$edgeAgent.modules: {len(modules)} modules; a deployment holds at most "
                            f"{MAX_MODULES}")
    for group, items in (("systemModules", system), ("modules", modules)):
        for name, module in items.items():
            where = f"modulesContent.$edgeAgent.{group}.{name}"
            if group == "modules" and not MODULE_NAME_RE.match(name):
                raise ManifestError(f"{where}: {name!r} is not a valid module name (letters, digits and - : . + % _ "
                                    "# * ? ! ( ) , = @ ; ', starting with a letter or digit, at most 64)")
            settings = (module or {}).get("settings") if isinstance(module, dict) else None
            image = (settings or {}).get("image")
            if not isinstance(image, str) or not image.strip():
                raise ManifestError(f"{where}.settings.image: needs a container image, e.g. "
                                    "mcr.microsoft.com/azureiotedge-agent:1.5")
            _create_options(settings, f"{where}.settings")
    hv = str(hub.get("schemaVersion"))
    if hv not in EDGE_HUB_SCHEMAS:
        raise ManifestError(f"modulesContent.$edgeHub: schemaVersion {hub.get('schemaVersion')!r}: edgeHub knows "
                            f"{', '.join(EDGE_HUB_SCHEMAS)}")
    if hv != "1.0" and not isinstance(hub.get("routes"), dict):
        raise ManifestError("modulesContent.$edgeHub: routes are required from schemaVersion 1.1 on")
    if not isinstance(hub.get("storeAndForwardConfiguration"), dict):
        raise ManifestError("modulesContent.$edgeHub: needs storeAndForwardConfiguration (timeToLiveSecs)")
    for name in mc:
        if name not in RUNTIME_MODULES and name not in modules:
            raise ManifestError(f"modulesContent.{name}: desired properties for a module that "
                                "$edgeAgent.modules does not run")
        _desired(mc, name)
        size = section_size(send_form({name: mc[name]})[name]["properties.desired"])
        if size > TWIN_SECTION_LIMITS["desired_properties"]:
            raise ManifestError(f"modulesContent.{name}: {size} bytes of desired properties; a module twin holds "
                                f"at most {TWIN_SECTION_LIMITS['desired_properties']}")


def _map_settings(agent: Dict[str, Any], fn) -> Dict[str, Any]:
    out = copy.deepcopy(agent)
    for group in ("systemModules", "modules"):
        for module in (out.get(group) or {}).values():
            if isinstance(module, dict) and isinstance(module.get("settings"), dict):
                module["settings"] = fn(module["settings"])
    return out


def _chunked(settings: Dict[str, Any]) -> Dict[str, Any]:
    opts = _create_options(settings, "settings")
    out = {k: v for k, v in settings.items() if not re.match(r"^createOptions\d\d$", k)}
    if opts is None:
        return out
    text = json.dumps(opts, separators=(",", ":"), sort_keys=True)
    chunks = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]
    if len(chunks) > MAX_CHUNKS:
        raise ManifestError(f"createOptions is {len(text)} characters; the edge agent takes at most "
                            f"{CHUNK * MAX_CHUNKS}")
    out["createOptions"] = chunks[0]
    for i, chunk in enumerate(chunks[1:], start=1):
        out[f"createOptions{i:02d}"] = chunk
    return out


def send_form(mc: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest as it is sent: createOptions a compact JSON string, in 512-character chunks when long."""
    out = copy.deepcopy(mc)
    if isinstance(out.get("$edgeAgent"), dict) and isinstance(out["$edgeAgent"].get("properties.desired"), dict):
        out["$edgeAgent"]["properties.desired"] = _map_settings(out["$edgeAgent"]["properties.desired"], _chunked)
    return out


def _parsed(settings: Dict[str, Any]) -> Dict[str, Any]:
    opts = _create_options(settings, "settings")
    out = {k: v for k, v in settings.items() if not re.match(r"^createOptions(\d\d)?$", k)}
    if opts is not None:
        out["createOptions"] = opts
    return out


def compare_form(name: str, desired: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A module twin's desired properties made comparable: without $metadata / $version, createOptions parsed."""
    if desired is None:
        return None
    clean = {k: v for k, v in desired.items() if not k.startswith("$")}
    if name == "$edgeAgent":
        try:
            return _map_settings(clean, _parsed)
        except ManifestError:
            return clean  # what the hub holds is not ours to validate: it simply differs
    return clean


def plan_manifest(mc: Dict[str, Any], current: Dict[str, Optional[Dict[str, Any]]]) -> Dict[str, Tuple]:
    """{module: (current desired, declared desired)} for each module whose desired properties differ.

    ``current`` maps module names to their twin's desired properties (None: no module twin).  A module that the
    manifest gives desired properties but that has no twin is a difference too: applying the content creates the
    twins of every module it lists (iot-api-2.md §2.6), so a missing twin means the content was never applied or
    the module was deleted since."""
    changes: Dict[str, Tuple] = {}
    for name, part in mc.items():
        want = compare_form(name, part.get("properties.desired"))
        have = compare_form(name, current.get(name))
        if have != want:
            changes[name] = (have, want)
    return changes


def modules_list(mc: Dict[str, Any]) -> List[str]:
    return sorted(((mc.get("$edgeAgent") or {}).get("properties.desired") or {}).get("modules") or {})
