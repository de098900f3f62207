from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from portal import health

handler404 = "api.errors.not_found"  # JSON under /api/, the portal's page elsewhere
handler500 = "api.errors.server_error"  # JSON under /api/ (500, or 503 without a database)

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="prometheus-django-metrics"),  # observers only
    path("api/v1/", include("metering.api.urls")),
    path("api/v1/", include("invoicing.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("finance/", include("invoicing.urls")),  # CSV/PDF downloads
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("portal.web.urls")),
]
