"""How the API's authentication reads in OpenAPI (so /api/docs/ offers an Authorize button)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A tenant API key (tbk_...) or a service token (tbs_...) that names the "
            "tenant key it acts for in `api_key`.",
        }
