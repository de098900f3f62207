"""Local SMTP, DingTalk and webhook servers for these tests."""

from tests.notify_servers import *  # noqa: F403
