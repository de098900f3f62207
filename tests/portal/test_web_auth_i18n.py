"""Login, logout, password reset by email; English and Simplified Chinese."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from tests.portal.web_support import PASSWORD

pytestmark = pytest.mark.django_db

PO_FILE = Path(settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
MO_FILE = PO_FILE.with_suffix(".mo")
PORTAL_TEMPLATES = [
    Path(settings.BASE_DIR) / "templates" / name
    for name in (
        "base.html",
        "error_base.html",
        "403.html",
        "404.html",
        "500.html",
        "503.html",
        "portal",
        "registration",
    )
]


def test_login_lands_on_the_tenant_dashboard_and_logout(client, tenant_a, owner_a):
    response = client.post(reverse("login"), {"username": "owner@acme.test", "password": PASSWORD}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("dashboard", kwargs={"slug": tenant_a.slug})
    assert response.status_code == 200
    logged_out = client.post(reverse("logout"), follow=True)
    assert logged_out.redirect_chain[-1][0] == reverse("login")
    assert client.get(reverse("dashboard", kwargs={"slug": tenant_a.slug})).status_code == 302


def test_wrong_password_is_refused(client, owner_a):
    response = client.post(reverse("login"), {"username": "owner@acme.test", "password": "nope"})
    assert response.status_code == 200
    assert response.context["form"].errors
    assert b'role="alert"' in response.content


def test_password_reset_by_email(client, owner_a, mailoutbox):
    response = client.post(reverse("password_reset"), {"email": "owner@acme.test"})
    assert response["Location"] == reverse("password_reset_done")
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == ["owner@acme.test"]
    link = re.search(r"https?://[^/]+(/password/reset/\S+/)", message.body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.context["validlink"] is True
    set_url = form_page.redirect_chain[-1][0]
    new_password = "another long passphrase 99"
    done = client.post(set_url, {"new_password1": new_password, "new_password2": new_password})
    assert done["Location"] == reverse("password_reset_complete")
    # Through the login form: the lockout check needs the request (client.login has none).
    logged_in = client.post(reverse("login"), {"username": "owner@acme.test", "password": new_password})
    assert logged_in.status_code == 302, logged_in.content
    # The link works once.
    assert client.get(link, follow=True).context["validlink"] is False


def test_unknown_email_sends_nothing_and_says_the_same(client, db, mailoutbox):
    response = client.post(reverse("password_reset"), {"email": "nobody@example.test"})
    assert response["Location"] == reverse("password_reset_done")
    assert mailoutbox == []


def test_switching_to_chinese(client, tenant_a, owner_a, usage_a):
    assert MO_FILE.exists(), "compile the translations first: manage.py compilemessages (make test does)"
    client.force_login(owner_a)
    url = reverse("dashboard", kwargs={"slug": tenant_a.slug})
    response = client.post(reverse("set_language"), {"language": "zh-hans", "next": url}, follow=True)
    page = response.content.decode()
    assert '<html lang="zh-hans">' in page
    for label in ("仪表盘", "用量", "余额", "每日令牌", "用量最高的模型", "退出登录"):
        assert label in page, label
    assert "Dashboard" not in page
    # Chart labels are translated on the server too.
    assert "缓存输入" in page
    back = client.post(reverse("set_language"), {"language": "en", "next": url}, follow=True)
    assert "Dashboard" in back.content.decode()


@pytest.mark.parametrize("name", ["usage", "keys", "billing", "key-create"])
def test_chinese_pages(client, tenant_a, owner_a, name):
    client.force_login(owner_a)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    page = client.get(reverse(name, kwargs={"slug": tenant_a.slug})).content.decode()
    assert "令牌计费" in page  # the brand
    assert "Log out" not in page


def _po_entries() -> list[tuple[str, str, str, bool]]:
    """(msgctxt, msgid, msgstr, fuzzy) of every entry; plural entries report msgstr[0]."""
    entries = []
    for block in PO_FILE.read_text(encoding="utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        current = None
        for line in block.splitlines():
            match = re.match(r"^(msgctxt|msgid|msgid_plural|msgstr(?:\[0\])?) (\".*\")$", line)
            if match:
                current = match.group(1).replace("[0]", "")
                fields[current] = match.group(2)[1:-1]
            elif line.startswith('"') and current:
                fields[current] += line[1:-1]
        if fields.get("msgid"):
            entries.append((fields.get("msgctxt", ""), fields["msgid"], fields.get("msgstr", ""), "#, fuzzy" in block))
    return entries


def test_every_message_is_translated():
    entries = _po_entries()
    assert len(entries) > 200
    assert [e for e in entries if not e[2] or e[3]] == []


def test_every_portal_template_string_is_in_the_catalog():
    msgids = {msgid.replace('\\"', '"').replace("%%", "%") for _ctx, msgid, _str, _fuzzy in _po_entries()}
    found = set()
    for root in PORTAL_TEMPLATES:
        files = [root] if root.is_file() else sorted(root.rglob("*.html")) + sorted(root.rglob("*.txt"))
        for path in files:
            text = path.read_text(encoding="utf-8")
            found |= set(re.findall(r'{% translate "([^"]+)"', text))
            found |= set(re.findall(r"{% translate '([^']+)'", text))
    assert len(found) > 100
    assert sorted(found - msgids) == []
