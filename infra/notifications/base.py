"""The transport contract: a rendered message in, delivered or a classified error out."""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Message:
    subject: str  # email subject, chat title (DingTalk, Feishu card header, Slack header)
    text: str  # plain text body (email)
    markdown: str  # markdown body, starting with a "### subject" line (DingTalk, WeCom; Feishu, Slack)
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable payload (webhook JSON)
    idempotency_key: str = ""  # the same for every attempt of one delivery; receivers dedupe on it


@dataclass(frozen=True)
class SendResult:
    attempts: int = 1  # requests made (a webhook retries inside its time budget)
    detail: str = ""


class ConfigError(ValueError):
    """A channel's settings are unusable; the message says which field and why."""


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool, retry_after: float | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after  # seconds, when the far end said how long to wait
        self.attempts = attempts

    @property
    def kind(self) -> str:
        return "permanent" if self.permanent else "transient"


class Transport(ABC):
    kind: ClassVar[str]
    label: ClassVar[str]

    @abstractmethod
    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        """The cleaned config, or ConfigError."""

    @abstractmethod
    def send(self, config: dict[str, Any], message: Message) -> SendResult:
        """Deliver `message` or raise TransportError."""
