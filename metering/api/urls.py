from django.urls import path

from metering.api import views

urlpatterns = [
    path("events", views.EventView.as_view(), name="api-events"),
    path("events/batch", views.EventBatchView.as_view(), name="api-events-batch"),
    path("tokenize", views.TokenizeView.as_view(), name="api-tokenize"),
    path("usage", views.UsageView.as_view(), name="api-usage"),
]
