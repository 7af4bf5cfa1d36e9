# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: pydantic, for the models that validate nested documents (IoT Central devices,
configurations and deployments).  Identity specs (``_models``) are plain classes: a task that manages one
device does not pay pydantic's import (about 0.1 s).

The import is guarded so that ansible-test's import and validate-modules sanity tests, which run without it,
can still load every module; ``_deps.check_requirements`` fails a task with Ansible's standard message when
pydantic is missing.
"""

from __future__ import annotations

import traceback

try:
    import pydantic  # pylint: disable=unused-import
    from pydantic import (  # pylint: disable=unused-import
        BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator,
    )
except ImportError:  # pragma: no cover - exercised by the sanity import test
    pydantic = None
    PYDANTIC_IMPORT_ERROR = traceback.format_exc()

    class BaseModel:  # minimal stand-ins so that model classes can still be defined
        pass

    class ValidationError(Exception):
        pass

    def ConfigDict(**kwargs):  # noqa: N802 - mirrors the pydantic name
        return kwargs

    def Field(*args, **kwargs):  # noqa: N802
        return kwargs.get("default")

    def field_validator(*args, **kwargs):
        return lambda fn: fn

    def model_validator(*args, **kwargs):
        return lambda fn: fn
else:
    PYDANTIC_IMPORT_ERROR = None
