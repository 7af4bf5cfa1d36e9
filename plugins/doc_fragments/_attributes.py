# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: attribute documentation shared by the collection's modules (not for other collections)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second run reports no change.
      - This assumes that the hub or application did not change in a relevant way between the runs.
"""

    ACTIONGROUP_IOTHUB = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/fleet.azure_iot.iothub) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - fleet.azure_iot.iothub
"""

    ACTIONGROUP_IOTCENTRAL = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/fleet.azure_iot.iotcentral) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - fleet.azure_iot.iotcentral
"""

    ACTIONGROUP_DPS = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/fleet.azure_iot.dps) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - fleet.azure_iot.dps
"""

    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details: This module only reads; it runs the same in check mode.
  diff_mode:
    support: N/A
    details: This module only reads.
  idempotent:
    support: full
    details: This module only reads.
"""
