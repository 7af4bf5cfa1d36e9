# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HTTP options and requirements shared by every module (IoT Hub and IoT Central): one client, one retry policy."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  timeout:
    description:
      - Seconds to wait for each HTTP request; greater than 0.
    type: float
    default: 30
  max_retries:
    description:
      - How many times a throttled (429) or failed (5xx, connection error) request is retried at most.
      - A write is retried only when a repeat cannot apply it twice (see docs/reliability.md).
    type: int
    default: 8
  retry_budget_seconds:
    description:
      - The most seconds one request may spend waiting between retries, in total.
    type: float
    default: 300
  retry_backoff_seconds:
    description:
      - The first wait before a retry; each later wait doubles (at most 60 seconds), with random jitter.
      - By default the first wait follows what the service asks for (C(Retry-After), or the "Wait 10 seconds"
        of IoT Hub's 429 answer), and is 2 seconds for other errors.
    type: float
requirements:
  - python >= 3.11
  - httpx >= 0.27
  - pydantic >= 2.5
  - azure-identity >= 1.15 (only for Entra ID auth)
"""
