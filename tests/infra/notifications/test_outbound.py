"""The outbound URL policy, against real local listeners: what is refused at save and at send,
the allow-list, redirects, DNS rebinding, TLS to the URL's host name, and generic errors.

Nothing here leaves the machine: every listener is on loopback, and the only fake is a name
resolver (for the rebinding case), never the network.
"""

import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer

import pytest
from django.conf import settings as django_settings

from infra.notifications import ConfigError, Message, TransportError, get_transport
from infra.notifications.http import NO_ANSWER, REFUSED
from infra.notifications.outbound import refusal_reason
from tests.notify_servers import LOOPBACK_ALLOWED, WebhookReceiver

SECRET = "a-webhook-secret-of-some-length"
MESSAGE = Message(subject="Test", text="test", markdown="test", data={"type": "test"}, idempotency_key="d-1")

# One address (or name) per class the policy refuses, IPv4 and IPv6, plain and wrapped.
REFUSED_HOSTS = {
    "loopback": "127.0.0.1",
    "loopback, elsewhere in 127/8": "127.10.20.30",
    "loopback IPv6": "[::1]",
    "RFC 1918 10/8": "10.1.2.3",
    "RFC 1918 172.16/12": "172.20.0.1",
    "RFC 1918 192.168/16": "192.168.1.1",
    "CGNAT 100.64/10": "100.100.0.1",
    "link-local": "169.254.1.1",
    "cloud metadata": "169.254.169.254",
    "link-local IPv6": "[fe80::1]",
    "link-local IPv6 with a zone no resolver knows": "[fe80::1%25nosuchif]",
    "unique-local fc00::/7": "[fd12:3456::1]",
    "site-local IPv6": "[fec0::1]",
    "multicast": "224.0.0.1",
    "multicast IPv6": "[ff02::1]",
    "reserved 240/4": "240.0.0.1",
    "broadcast": "255.255.255.255",
    "unspecified": "0.0.0.0",
    "unspecified IPv6": "[::]",
    "this network 0/8": "0.1.2.3",
    "documentation (not global)": "192.0.2.10",
    "benchmarking (not global)": "198.18.0.1",
    "IPv4-mapped loopback": "[::ffff:127.0.0.1]",
    "IPv4-mapped metadata": "[::ffff:169.254.169.254]",
    "IPv4-mapped private": "[::ffff:10.0.0.1]",
    "IPv4-compatible loopback": "[::127.0.0.1]",
    "NAT64 of loopback": "[64:ff9b::7f00:1]",
    "6to4 of private": "[2002:a00:1::]",
    "decimal loopback": "2130706433",
    "hex loopback": "0x7f.0.0.1",
    "short loopback": "127.1",
    "localhost (a name for 127.0.0.1)": "localhost",
}
PUBLIC_HOSTS = ["8.8.8.8", "[2606:4700:4700::1111]", "[::ffff:8.8.8.8]", "[64:ff9b::808:808]"]


def configs(url: str) -> dict[str, dict]:
    return {
        "webhook": {"url": url, "secret": SECRET},
        "dingtalk": {"webhook_url": f"{url}?access_token=tok"},
    }


# --- which addresses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "shared address space"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd00::1", "unique-local"),
        ("fec0::1", "site-local"),
        ("224.0.0.251", "multicast"),
        ("ff0e::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("192.0.2.1", "not globally routable"),
        ("2001:db8::1", "not globally routable"),
        ("::ffff:127.0.0.1", "embeds 127.0.0.1: loopback"),
        ("::ffff:169.254.169.254", "embeds 169.254.169.254: link-local"),
        ("64:ff9b::a00:1", "embeds 10.0.0.1: private"),
        ("2002:c0a8:101::", "embeds 192.168.1.1: private"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_each_address_class(address, reason):
    assert refusal_reason(ipaddress.ip_address(address)) == reason


# --- at save --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["webhook", "dingtalk"])
@pytest.mark.parametrize("host", REFUSED_HOSTS.values(), ids=REFUSED_HOSTS.keys())
def test_internal_addresses_are_refused_when_a_channel_is_saved(kind, host):
    with pytest.raises(ConfigError) as caught:
        get_transport(kind).validate(configs(f"http://{host}:8080/hook")[kind])
    field = "url" if kind == "webhook" else "webhook_url"  # and nothing about what the name resolved to
    assert str(caught.value) == f"{field}: refused by policy: the server only sends to public internet addresses."


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_public_addresses_are_accepted(host):
    url = f"https://{host}/hook"
    assert get_transport("webhook").validate(configs(url)["webhook"])["url"] == url


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@8.8.8.8/hook",
        "https://user@8.8.8.8/hook",
        "https://8.8.8.8@127.0.0.1/hook",
        "https://8.8.8.8/a b",
        "gopher://8.8.8.8/",
        "file:///etc/passwd",
        "https://8.8.8.8:0/",
        "https://8.8.8.8:70000/",
    ],
)
def test_userinfo_odd_schemes_and_broken_urls_are_refused(url):
    with pytest.raises(ConfigError):
        get_transport("webhook").validate(configs(url)["webhook"])


def test_a_nonstandard_port_is_fine():
    url = "https://8.8.8.8:8443/hook"
    assert get_transport("webhook").validate(configs(url)["webhook"])["url"] == url


def load_settings(allowed: str) -> subprocess.CompletedProcess:
    """Import portal/settings.py in a fresh interpreter with OUTBOUND_ALLOWED_NETWORKS set."""
    code = "import portal.settings as s; print(repr(s.OUTBOUND_ALLOWED_NETWORKS))"
    env = {**os.environ, "OUTBOUND_ALLOWED_NETWORKS": allowed}
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("value", ["10.0.0.1/8", "10.0.0.0/33", "300.1.2.3", "fd00::/129", "hooks corp", "a..b"])
def test_a_bad_allow_list_fails_at_start_up(value):
    loaded = load_settings(f"192.168.0.0/16,{value}")
    assert loaded.returncode != 0
    assert "ImproperlyConfigured: OUTBOUND_ALLOWED_NETWORKS" in loaded.stderr


def test_the_allow_list_setting_reads_cidrs_and_names():
    loaded = load_settings(" 10.20.0.0/16, FD00:1::/64 ,Hooks.Corp.Example,127.0.0.1")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "('10.20.0.0/16', 'fd00:1::/64', 'hooks.corp.example', '127.0.0.1')"
    assert load_settings("").stdout.strip() == "()"


def test_allow_list_by_network_and_by_name(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("10.20.0.0/16", "hooks.corp.example")
    webhook = get_transport("webhook")
    assert webhook.validate(configs("http://10.20.3.4/h")["webhook"])
    assert webhook.validate(configs("http://[::ffff:10.20.3.4]/h")["webhook"])
    assert webhook.validate(configs("http://hooks.corp.example/h")["webhook"])
    for url in ("http://10.21.0.1/h", "http://127.0.0.1/h", "http://169.254.169.254/h"):
        with pytest.raises(ConfigError, match="refused by policy"):
            webhook.validate(configs(url)["webhook"])


# --- at send --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["webhook", "dingtalk"])
@pytest.mark.parametrize("form", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433", "127.1"])
def test_a_config_written_around_the_save_check_is_refused_at_send_without_connecting(kind, form, listener):
    target = listener()  # on 127.0.0.1; the allow-list is empty
    url = f"http://{form}:{target.port}/hooks/billing"

    with pytest.raises(TransportError) as caught:
        get_transport(kind).send(configs(url)[kind], MESSAGE)

    assert caught.value.permanent
    assert str(caught.value) == REFUSED
    assert target.contacts == 0 and target.requests == []


def test_the_allow_list_lets_a_local_receiver_get_the_signed_message(settings, webhook_receiver):
    receiver = webhook_receiver(secret=SECRET)  # its fixture allows 127.0.0.1/32
    settings.OUTBOUND_ALLOWED_NETWORKS = ()
    with pytest.raises(TransportError, match="refused by policy"):
        get_transport("webhook").send({"url": receiver.url, "secret": SECRET}, MESSAGE)
    assert receiver.answered == []

    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)
    get_transport("webhook").send({"url": receiver.url, "secret": SECRET}, MESSAGE)
    assert receiver.answered == [200]  # the signature checked out
    assert receiver.messages[0]["id"] == "d-1"


def test_the_allow_list_by_host_name(settings, listener):
    receiver = listener()
    url = f"http://localhost:{receiver.port}/hooks/billing"  # localhost is 127.0.0.1 here
    settings.OUTBOUND_ALLOWED_NETWORKS = ("localhost",)
    get_transport("webhook").send({"url": url, "secret": SECRET}, MESSAGE)
    [request] = receiver.requests
    assert request.headers["Host"] == f"localhost:{receiver.port}"

    settings.OUTBOUND_ALLOWED_NETWORKS = ("other.example",)  # another name opens nothing
    with pytest.raises(TransportError, match="refused by policy"):
        get_transport("webhook").send({"url": url, "secret": SECRET}, MESSAGE)
    assert len(receiver.requests) == 1


def test_a_path_in_unicode_is_sent_percent_encoded(settings, listener):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)
    receiver = listener()
    get_transport("webhook").send({"url": f"http://127.0.0.1:{receiver.port}/告警/ü?x=1", "secret": SECRET}, MESSAGE)
    assert [request.path for request in receiver.requests] == ["/%E5%91%8A%E8%AD%A6/%C3%BC"]


def test_an_allowed_network_does_not_open_its_neighbours(settings, listener):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)
    neighbour = listener(host="127.0.0.2")
    with pytest.raises(TransportError, match="refused by policy"):
        get_transport("webhook").send({"url": neighbour.url, "secret": SECRET}, MESSAGE)
    assert neighbour.contacts == 0


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(status, settings, listener):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)
    internal = listener(host="127.0.0.2")  # where the redirect points; not allowed
    allowed_too = listener()  # allowed, and still not followed to
    for location in (internal.url, allowed_too.url):
        receiver = listener(mode="redirect", status=status, location=location)
        with pytest.raises(TransportError) as caught:
            get_transport("webhook").send({"url": receiver.url, "secret": SECRET}, MESSAGE)
        assert caught.value.permanent and caught.value.attempts == 1
        assert "redirects are not followed" in str(caught.value)
        assert len(receiver.requests) == 1  # asked once, not retried
    assert internal.contacts == 0 and allowed_too.contacts == 0


def test_dingtalk_does_not_follow_redirects_either(settings, listener):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)
    internal = listener(host="127.0.0.2")
    robot = listener(mode="redirect", status=307, location=internal.url)
    with pytest.raises(TransportError, match="redirects are not followed") as caught:
        get_transport("dingtalk").send({"webhook_url": f"{robot.url}?access_token=t"}, MESSAGE)
    assert caught.value.permanent
    assert internal.contacts == 0


def test_dns_rebinding_the_address_connected_to_is_the_one_checked(settings, monkeypatch, listener):
    """A name resolver (the only fake here) whose answers change between calls, as a rebinding
    attacker's DNS does: the request must go to the address that was checked."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)
    checked = listener(host="127.0.0.1")
    rebound = listener(host="127.0.0.2", port=checked.port)
    real, asked = socket.getaddrinfo, []

    def resolver(host, port, *args, **kwargs):
        if host == "rebind.test":  # 127.0.0.1 (allowed) to the first question, 127.0.0.2 after
            asked.append(host)
            address = "127.0.0.1" if len(asked) == 1 else "127.0.0.2"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        if host == "mixed.test":  # public and internal answers at once: all must pass
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", port)),
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    url = f"http://rebind.test:{checked.port}/hooks/billing"
    get_transport("webhook").send({"url": url, "secret": SECRET}, MESSAGE)

    assert rebound.contacts == 0
    [request] = checked.requests
    assert request.headers["Host"] == f"rebind.test:{checked.port}"  # the URL's host, not the address
    assert request.path == "/hooks/billing"
    assert asked == ["rebind.test"]  # resolved once for the request: checked and connected alike

    mixed = f"http://mixed.test:{checked.port}/hooks/billing"
    with pytest.raises(ConfigError, match="refused by policy"):
        get_transport("webhook").validate({"url": mixed, "secret": SECRET})
    with pytest.raises(TransportError, match="refused by policy"):
        get_transport("webhook").send({"url": mixed, "secret": SECRET}, MESSAGE)
    assert rebound.contacts == 0 and len(checked.requests) == 1


# --- TLS: SNI and the certificate are the URL's host name -------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for the name "localhost" only (openssl, no Python package)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


class TlsReceiver(WebhookReceiver):
    """The webhook receiver behind TLS on 127.0.0.1, recording the SNI names it was asked for."""

    def __init__(self, *, secret: str, key, cert) -> None:
        super().__init__(secret=secret)
        self.server.shutdown()
        self.server.server_close()
        handler = self.server.RequestHandlerClass
        self.sni: list[str | None] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]


@pytest.fixture
def tls_receiver(certificate, settings, monkeypatch):
    key, cert = certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate (and only it)
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32", "localhost")
    receiver = TlsReceiver(secret=SECRET, key=key, cert=cert)
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_https_sends_sni_and_checks_the_certificate_of_the_urls_host(tls_receiver):
    get_transport("webhook").send({"url": f"https://localhost:{tls_receiver.port}/h", "secret": SECRET}, MESSAGE)
    assert tls_receiver.answered == [200]
    assert tls_receiver.sni == ["localhost"]


def test_https_to_a_name_the_certificate_does_not_carry_is_not_delivered(tls_receiver, settings):
    settings.NOTIFICATIONS_RETRY_BUDGET = 0.5
    with pytest.raises(TransportError) as caught:  # the certificate says localhost, not 127.0.0.1
        get_transport("webhook").send({"url": f"https://127.0.0.1:{tls_receiver.port}/h", "secret": SECRET}, MESSAGE)
    assert str(caught.value) == NO_ANSWER
    assert tls_receiver.answered == []


# --- what tenants are told ------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once it is closed


def test_network_failures_all_read_the_same(settings, listener):
    settings.OUTBOUND_ALLOWED_NETWORKS = LOOPBACK_ALLOWED
    settings.NOTIFICATIONS_HTTP_TIMEOUT = 0.3
    settings.NOTIFICATIONS_RETRY_BUDGET = 0.5
    silent = listener(mode="silent")  # accepts, never answers: a timeout
    errors = {}
    for name, url in {
        "refused": f"http://127.0.0.1:{closed_port()}/h",
        "timed out": silent.url,
    }.items():
        for kind in ("webhook", "dingtalk"):
            with pytest.raises(TransportError) as caught:
                get_transport(kind).send(configs(url)[kind], MESSAGE)
            assert not caught.value.permanent
            errors[name, kind] = str(caught.value)
    assert set(errors.values()) == {NO_ANSWER}
    assert silent.requests  # the timeout was real


def test_refused_addresses_read_the_same_whatever_listens_there(listener):
    """No allow-list: an open port, a closed one and a silent one on loopback all give the
    same answer, and none of them is contacted."""
    open_port, silent = listener(), listener(mode="silent")
    errors = set()
    for port in (open_port.port, closed_port(), silent.port):
        for kind in ("webhook", "dingtalk"):
            with pytest.raises(TransportError) as caught:
                get_transport(kind).send(configs(f"http://127.0.0.1:{port}/h")[kind], MESSAGE)
            assert caught.value.permanent
            errors.add(str(caught.value))
    assert errors == {REFUSED}
    assert open_port.contacts == silent.contacts == 0
    assert "errno" not in REFUSED.lower() and "refused by policy" in REFUSED
