"""A path no route matches answers in the API's error shape under /api/, and with the
portal's page elsewhere (the fuzzer found /api/v1/events/-1 answered with HTML)."""

import pytest


@pytest.mark.parametrize("path", ["/api/v1/events/-1", "/api/v1/invoices/-3.pdf", "/api/v1/nothing-here"])
def test_an_unrouted_api_path_is_a_json_404(key_a, path):
    response = key_a.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "not_found"


def test_an_unrouted_portal_path_is_the_html_page(client, db):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
