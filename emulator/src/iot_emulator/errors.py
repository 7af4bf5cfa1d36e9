"""Service errors raised by the emulator's domain code and rendered by the HTTP layer.

IoT Hub answers registry errors with "envelope A" (iot-api.md §2.3):
``{"Message": "ErrorCode:<Code>;<text>", "ExceptionMessage": "Tracking ID:<32hex>-G:0-TimeStamp:<MM/dd/yyyy HH:mm:ss>"}``
plus the ``iothub-errorcode`` header.  IoT Central uses ``{"error": {...}}`` and ``x-ms-error-code``
(iot-api.md §8); see ``central.py``.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error the emulated service returns to the client."""

    def __init__(self, status: int, code: str, message: str | None = None, headers: dict | None = None):
        super().__init__(f"{status} {code}: {message or code}")
        self.status = status
        self.code = code
        self.message = message if message is not None else code
        self.headers = dict(headers or {})


def bad_request(message: str, code: str = "ArgumentInvalid") -> ApiError:
    return ApiError(400, code, message)


def not_found(device_id: str) -> ApiError:
    # The real service puts just the id after the ';' for a missing device (iot-api.md §2.3).
    return ApiError(404, "DeviceNotFound", device_id)


def precondition_failed() -> ApiError:
    return ApiError(412, "PreconditionFailed", "PreconditionFailed")


def unauthorized(message: str = "Unauthorized") -> ApiError:
    return ApiError(401, "IotHubUnauthorizedAccess", message)


THROTTLE_MESSAGE = (
    "The request has been throttled. Wait 10 seconds and try again. Operation type: {op}"
)


def throttled(op: str = "CRUD") -> ApiError:
    return ApiError(429, "ThrottlingException", THROTTLE_MESSAGE.format(op=op))
