"""The relay's errors in OpenAI's body shape: {"error": {"message", "type", "param", "code"}}."""

from typing import Any

import orjson


class RelayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> bytes:
    data: dict[str, Any] = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return orjson.dumps(data)
