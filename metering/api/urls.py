from django.urls import path

from metering.api import authorize, prices, views

urlpatterns = [
    path("events", views.EventView.as_view(), name="api-events"),
    path("events/<int:event_id>", views.EventDetailView.as_view(), name="api-event-detail"),
    path("events/batch", views.EventBatchView.as_view(), name="api-events-batch"),
    path("tokenize", views.TokenizeView.as_view(), name="api-tokenize"),
    path("usage", views.UsageView.as_view(), name="api-usage"),
    path("authorize", authorize.AuthorizeView.as_view(), name="api-authorize"),
    path("balance", authorize.BalanceView.as_view(), name="api-balance"),
    path("prices", prices.PricesView.as_view(), name="api-prices"),
]
