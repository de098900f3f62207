"""Real local servers that notifications are sent to in tests (127.0.0.1 only).

- an SMTP server (aiosmtpd) that keeps what it receives and refuses recipients at
  refused.example.com with 550;
- a DingTalk custom robot stand-in that checks the access token, the signature exactly as
  DingTalk documents it (timestamp in ms within an hour, sign = urlencode(base64(HMAC-SHA256(
  secret, "timestamp\\nsecret")))) and the keyword, and answers with DingTalk's errcode JSON;
- a webhook receiver that checks the HMAC signature over "<timestamp>.<body>" and can be told
  to fail the next requests;
- a WeCom group robot stand-in that checks the `key` parameter, the markdown message shape and
  its 4096-byte limit, counts its 20 messages a minute, and answers with WeCom's errcode JSON;
- a Feishu / Lark custom bot stand-in that checks the token in the path, the signature in the
  body exactly as Feishu documents it (timestamp in seconds within an hour, sign =
  base64(HMAC-SHA256(key="timestamp\\nsecret", msg=""))), the keyword, the card's shape and
  the 20 KB body limit, and answers with Feishu's code JSON;
- a Slack incoming webhook stand-in that checks the path's secret and the blocks (header at most
  150 characters, mrkdwn section at most 3000) and answers `ok` or Slack's error texts;
- a plain listener that records every TCP connection and request it gets (so a test can show
  that nothing was sent to it), and answers 200, redirects, or never answers.

Each of these can be told what to answer next (`answer_next`), as the real service would when
busy, rate limited or misconfigured. The DingTalk, WeCom, Feishu, Slack and webhook fixtures
put 127.0.0.1 on the outbound allow-list
(OUTBOUND_ALLOWED_NETWORKS), as an operator would for a receiver on premises; the policy
refuses loopback otherwise. The listener fixture leaves the allow-list alone.

Import the fixtures into a conftest.py: `from tests.notify_servers import *`.
"""

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

__all__ = [
    "dingtalk_robot",
    "feishu_bot",
    "listener",
    "slack_webhook",
    "smtp_server",
    "webhook_receiver",
    "wecom_robot",
]

LOOPBACK_ALLOWED = ("127.0.0.1/32",)  # the test receivers' address, allowed as an on-premise receiver


# --- SMTP ---------------------------------------------------------------------------------


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    subject: str
    body: str
    headers: dict[str, str]


class _SmtpHandler:
    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example.com"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        parsed = message_from_bytes(envelope.content)
        payload = (
            parsed.get_payload(decode=True)
            if not parsed.is_multipart()
            else parsed.get_payload(0).get_payload(decode=True)
        )
        mail = Mail(
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            subject=str(make_header(decode_header(parsed["Subject"]))),
            body=payload.decode(parsed.get_content_charset() or "utf-8"),
            headers={key: str(value) for key, value in parsed.items()},
        )
        with self.lock:
            self.mails.append(mail)
        return "250 Message accepted"


@dataclass
class SmtpServer:
    host: str
    port: int
    handler: _SmtpHandler

    @property
    def mails(self) -> list[Mail]:
        with self.handler.lock:
            return list(self.handler.mails)


@pytest.fixture
def smtp_server(settings) -> Iterator[SmtpServer]:
    """A running SMTP server; Django's mail is pointed at it through the SMTP backend."""
    handler = _SmtpHandler()
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield SmtpServer("127.0.0.1", port, handler)
    finally:
        controller.stop()


# --- HTTP servers -------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class _HttpState:
    received: list[Received] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _serve(handler_class: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class _QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read(self) -> tuple[urllib.parse.SplitResult, bytes]:
        length = int(self.headers.get("Content-Length") or 0)
        return urllib.parse.urlsplit(self.path), self.rfile.read(length)

    def _answer(self, status: int, payload: dict | str, headers: dict[str, str] | None = None) -> None:
        text = isinstance(payload, str)  # Slack answers in plain text
        data = payload.encode() if text else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class DingTalkRobot:
    """One custom robot: its access token, optional signing secret and keyword."""

    def __init__(self, *, access_token: str, secret: str = "", keyword: str = "") -> None:
        self.access_token, self.secret, self.keyword = access_token, secret, keyword
        self.state = _HttpState()
        self.errcodes: list[int] = []  # every answer's errcode, in order
        robot = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                parts, body = self._read()
                query = urllib.parse.parse_qs(parts.query)
                errcode, errmsg = robot.check(parts.path, query, body)
                with robot.state.lock:
                    robot.errcodes.append(errcode)
                    if errcode == 0:
                        robot.state.received.append(Received(parts.path, query, dict(self.headers), body))
                self._answer(200, {"errcode": errcode, "errmsg": errmsg})

        self.server, base = _serve(Handler)
        self.webhook_url = f"{base}/robot/send?access_token={access_token}"

    def check(self, path: str, query: dict[str, list[str]], body: bytes) -> tuple[int, str]:
        if path != "/robot/send" or query.get("access_token") != [self.access_token]:
            return 300001, "token is not exist"
        if self.secret:
            timestamp, sign = query.get("timestamp", [""])[0], query.get("sign", [""])[0]
            if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > 3600 * 1000:
                return 310000, "sign not match, more than 1 hour"
            string_to_sign = f"{timestamp}\n{self.secret}".encode()
            expected = base64.b64encode(
                hmac.new(self.secret.encode(), string_to_sign, hashlib.sha256).digest()
            ).decode()
            if not hmac.compare_digest(sign, expected):  # parse_qs already URL-decoded it, as DingTalk does
                return 310000, "sign not match"
        try:
            message = json.loads(body)
        except ValueError:
            return 400, "invalid json"
        if message.get("msgtype") != "markdown" or not {"title", "text"} <= set(message.get("markdown", {})):
            return 40035, "missing markdown title or text"
        if self.keyword and self.keyword not in json.dumps(message, ensure_ascii=False):
            return 310000, "keywords not in content"
        return 0, "ok"

    @property
    def messages(self) -> list[dict]:
        with self.state.lock:
            return [received.json() for received in self.state.received]


@pytest.fixture
def dingtalk_robot(settings) -> Iterator[type[DingTalkRobot]]:
    """A factory of robots (each its own server); all are shut down after the test."""
    settings.OUTBOUND_ALLOWED_NETWORKS = LOOPBACK_ALLOWED
    robots: list[DingTalkRobot] = []

    def make(**kwargs) -> DingTalkRobot:
        robot = DingTalkRobot(**kwargs)
        robots.append(robot)
        return robot

    yield make
    for robot in robots:
        robot.server.shutdown()
        robot.server.server_close()


class WebhookReceiver:
    def __init__(self, *, secret: str) -> None:
        self.secret = secret
        self.state = _HttpState()
        self.fail_next: list[int] = []  # statuses to answer before succeeding
        receiver = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                parts, body = self._read()
                status = receiver.check(dict(self.headers), body)
                with receiver.state.lock:
                    if status == 200 and receiver.fail_next:
                        status = receiver.fail_next.pop(0)
                    receiver.state.answered.append(status)
                    if status == 200:
                        receiver.state.received.append(Received(parts.path, {}, dict(self.headers), body))
                self._answer(status, {"ok": status == 200})

        self.server, base = _serve(Handler)
        self.url = f"{base}/hooks/billing"

    def check(self, headers: dict[str, str], body: bytes) -> int:
        timestamp = headers.get("X-Tokenbill-Timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return 401
        mac = hmac.new(self.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(headers.get("X-Tokenbill-Signature", ""), f"sha256={mac}"):
            return 401
        return 200

    @property
    def messages(self) -> list[dict]:
        with self.state.lock:
            return [received.json() for received in self.state.received]

    @property
    def answered(self) -> list[int]:
        with self.state.lock:
            return list(self.state.answered)


@pytest.fixture
def webhook_receiver(settings) -> Iterator[type[WebhookReceiver]]:
    settings.OUTBOUND_ALLOWED_NETWORKS = LOOPBACK_ALLOWED
    receivers: list[WebhookReceiver] = []

    def make(**kwargs) -> WebhookReceiver:
        receiver = WebhookReceiver(**kwargs)
        receivers.append(receiver)
        return receiver

    yield make
    for receiver in receivers:
        receiver.server.shutdown()
        receiver.server.server_close()


def _factory(settings, make_one):
    """A fixture body: 127.0.0.1 allowed, then a factory of servers, all shut down afterwards."""
    settings.OUTBOUND_ALLOWED_NETWORKS = LOOPBACK_ALLOWED
    made: list = []

    def make(**kwargs):
        server = make_one(**kwargs)
        made.append(server)
        return server

    yield make
    for server in made:
        server.server.shutdown()
        server.server.server_close()


class _ChatStandIn:
    """What the chat robot stand-ins share: a server, what they accepted, scripted answers."""

    def __init__(self) -> None:
        self.state = _HttpState()
        self.codes: list[int] = []  # every answer's service code (or HTTP status for Slack), in order
        self.answer_next: list[tuple] = []  # scripted answers, given before any check, then the real ones

    def scripted(self) -> tuple | None:
        with self.state.lock:
            return self.answer_next.pop(0) if self.answer_next else None

    def record(self, code: int, ok: bool, parts: urllib.parse.SplitResult, headers: dict, body: bytes) -> None:
        with self.state.lock:
            self.codes.append(code)
            if ok:
                query = urllib.parse.parse_qs(parts.query)
                self.state.received.append(Received(parts.path, query, headers, body))

    @property
    def messages(self) -> list[dict]:
        with self.state.lock:
            return [received.json() for received in self.state.received]


class WeComRobot(_ChatStandIn):
    """A WeCom group robot: its key; at most `per_minute` messages a minute (WeCom: 20).

    answer_next holds (http_status, errcode) pairs, e.g. (200, 45009) rate limited, (200, -1)
    busy, (200, 93000) invalid webhook, (502, None) a gateway error.
    """

    MAX_CONTENT_BYTES = 4096

    def __init__(self, *, key: str, per_minute: int = 20) -> None:
        super().__init__()
        self.key, self.per_minute = key, per_minute
        self.sent_at: list[float] = []
        robot = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                parts, body = self._read()
                scripted = robot.scripted()
                if scripted is not None:
                    status, errcode = scripted
                    robot.record(errcode if errcode is not None else status, False, parts, {}, body)
                    self._answer(
                        status, {"errcode": errcode, "errmsg": "scripted"} if errcode is not None else "bad gateway"
                    )
                    return
                errcode, errmsg = robot.check(parts, body)
                robot.record(errcode, errcode == 0, parts, dict(self.headers), body)
                self._answer(200, {"errcode": errcode, "errmsg": errmsg})

        self.server, base = _serve(Handler)
        self.webhook_url = f"{base}/cgi-bin/webhook/send?key={key}"

    def check(self, parts: urllib.parse.SplitResult, body: bytes) -> tuple[int, str]:
        query = urllib.parse.parse_qs(parts.query)
        if parts.path != "/cgi-bin/webhook/send" or query.get("key") != [self.key]:
            return 93000, "invalid webhook url"
        try:
            message = json.loads(body.decode("utf-8"))  # strict UTF-8: a character cut in half fails here
        except ValueError:
            return 40058, "invalid json"
        content = message.get("markdown", {}).get("content") if message.get("msgtype") == "markdown" else None
        if not isinstance(content, str) or not content:
            return 40008, "invalid message type"
        if len(content.encode()) > self.MAX_CONTENT_BYTES:
            return 40058, "markdown.content exceed max length 4096"
        now = time.monotonic()
        with self.state.lock:
            self.sent_at = [at for at in self.sent_at if at > now - 60]
            if len(self.sent_at) >= self.per_minute:
                return 45009, "api freq out of limit"
            self.sent_at.append(now)
        return 0, "ok"


@pytest.fixture
def wecom_robot(settings) -> Iterator[type[WeComRobot]]:
    """A factory of WeCom robots (each its own server)."""
    yield from _factory(settings, WeComRobot)


class FeishuBot(_ChatStandIn):
    """A Feishu custom bot: its token, optional signing secret and keyword.

    answer_next holds (http_status, code) pairs, e.g. (200, 11232) rate limited, (400, 9499),
    (200, 19021) sign mismatch, (503, None) a gateway error. `legacy` answers success the older
    way, {"StatusCode": 0, ...}.
    """

    MAX_BODY = 20 * 1024

    def __init__(self, *, token: str, secret: str = "", keyword: str = "", legacy: bool = False) -> None:
        super().__init__()
        self.token, self.secret, self.keyword, self.legacy = token, secret, keyword, legacy
        bot = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                parts, body = self._read()
                scripted = bot.scripted()
                if scripted is not None:
                    status, code = scripted
                    bot.record(code if code is not None else status, False, parts, {}, body)
                    self._answer(
                        status, {"code": code, "msg": "scripted", "data": {}} if code is not None else "unavailable"
                    )
                    return
                code, msg = bot.check(parts.path, body)
                bot.record(code, code == 0, parts, dict(self.headers), body)
                if code == 0 and bot.legacy:
                    self._answer(200, {"Extra": None, "StatusCode": 0, "StatusMessage": "success"})
                else:
                    self._answer(200, {"code": code, "msg": msg, "data": {}})

        self.server, base = _serve(Handler)
        self.webhook_url = f"{base}/open-apis/bot/v2/hook/{token}"

    def check(self, path: str, body: bytes) -> tuple[int, str]:
        if path != f"/open-apis/bot/v2/hook/{self.token}":
            return 19001, "param invalid: incoming webhook access token invalid"
        if len(body) > self.MAX_BODY:
            return 19001, "param invalid: request body too large"
        try:
            message = json.loads(body.decode("utf-8"))
        except ValueError:
            return 9499, "Bad Request"
        if self.secret:
            timestamp, sign = str(message.get("timestamp", "")), str(message.get("sign", ""))
            if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 3600:
                return 19021, "sign match fail or timestamp is not within one hour from current time"
            string_to_sign = f"{timestamp}\n{self.secret}".encode()
            expected = base64.b64encode(hmac.new(string_to_sign, b"", hashlib.sha256).digest()).decode()
            if not hmac.compare_digest(sign, expected):
                return 19021, "sign match fail or timestamp is not within one hour from current time"
        kind = message.get("msg_type")
        if kind == "text":
            shaped = isinstance(message.get("content", {}).get("text"), str)
        elif kind == "interactive":
            card = message.get("card") or {}
            title = card.get("header", {}).get("title", {})
            elements = card.get("elements")
            shaped = (
                title.get("tag") == "plain_text"
                and bool(title.get("content"))
                and isinstance(elements, list)
                and all(isinstance(element, dict) and element.get("tag") for element in elements)
            )
        else:
            shaped = False
        if not shaped:
            return 19001, "param invalid: message shape"
        if self.keyword and self.keyword not in json.dumps(message, ensure_ascii=False):
            return 19024, "Key Words Not Found"
        return 0, "success"


@pytest.fixture
def feishu_bot(settings) -> Iterator[type[FeishuBot]]:
    """A factory of Feishu bots (each its own server)."""
    yield from _factory(settings, FeishuBot)


class SlackWebhook(_ChatStandIn):
    """A Slack incoming webhook: /services/T.../B.../<secret>.

    answer_next holds (http_status, text[, headers]) triples, e.g. (429, "rate_limited",
    {"Retry-After": "1"}), (410, "channel_is_archived"), (404, "no_service"), (500, "rollup_error").
    """

    def __init__(self, *, secret: str = "XXXXXXXXXXXXXXXXXXXXXXXX") -> None:
        super().__init__()
        self.secret = secret
        hook = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                parts, body = self._read()
                scripted = hook.scripted()
                if scripted is not None:
                    status, text, *headers = scripted
                    hook.record(status, False, parts, {}, body)
                    self._answer(status, text, headers[0] if headers else None)
                    return
                status, text = hook.check(parts.path, body)
                hook.record(status, status == 200, parts, dict(self.headers), body)
                self._answer(status, text)

        self.server, base = _serve(Handler)
        self.url = f"{base}/services/T0001/B0001/{secret}"

    def check(self, path: str, body: bytes) -> tuple[int, str]:
        if not path.startswith("/services/T0001/B0001/"):
            return 404, "no_service"
        if path != f"/services/T0001/B0001/{self.secret}":
            return 403, "invalid_token"
        try:
            message = json.loads(body.decode("utf-8"))
        except ValueError:
            return 400, "invalid_payload"
        blocks = message.get("blocks")
        if not isinstance(message.get("text"), str) and not blocks:
            return 400, "no_text"
        for block in blocks or []:
            text = block.get("text") or {}
            limit = {"header": 150, "section": 3000}.get(block.get("type"))
            if limit is None or not isinstance(text.get("text"), str) or len(text["text"]) > limit:
                return 400, "invalid_blocks"
            if text.get("type") != ("plain_text" if block["type"] == "header" else "mrkdwn"):
                return 400, "invalid_blocks"
        return 200, "ok"


@pytest.fixture
def slack_webhook(settings) -> Iterator[type[SlackWebhook]]:
    """A factory of Slack incoming webhooks (each its own server)."""
    yield from _factory(settings, SlackWebhook)


class Listener:
    """An HTTP listener that records every connection and request: zero means never contacted.

    mode "ok" answers 200; "redirect" answers `status` with `Location: location`; "silent"
    reads the request and never answers (the client times out).
    """

    def __init__(
        self, *, mode: str = "ok", host: str = "127.0.0.1", port: int = 0, status: int = 302, location: str = ""
    ) -> None:
        self.state = _HttpState()
        self.connections = 0
        self.release = threading.Event()
        listener = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                parts, body = self._read()
                with listener.state.lock:
                    listener.state.received.append(Received(parts.path, {}, dict(self.headers), body))
                if mode == "silent":
                    listener.release.wait(30)
                    self.close_connection = True
                elif mode == "redirect":
                    self._answer(status, {}, {"Location": location})
                else:
                    self._answer(200, {"ok": True})

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:
                with listener.state.lock:
                    listener.connections += 1
                return True

        self.server = Server((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.host, self.port = host, self.server.server_address[1]
        self.url = f"http://{host}:{self.port}/hooks/billing"

    @property
    def requests(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.received)

    @property
    def contacts(self) -> int:
        """TCP connections accepted (a request needs one)."""
        with self.state.lock:
            return self.connections

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[type[Listener]]:
    """A factory of recording listeners; the outbound allow-list is left as the test sets it."""
    listeners: list[Listener] = []

    def make(**kwargs) -> Listener:
        made = Listener(**kwargs)
        listeners.append(made)
        return made

    yield make
    for made in listeners:
        made.close()
