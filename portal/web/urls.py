"""The browser portal's URL map. Tenant pages live under /t/<slug>/ (membership checked)."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from portal.web.views import alerts, auth, billing, dashboard, home, keys, limits, ops, prices, quickstart, usage

auth_patterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/reset/", auth.PasswordResetView.as_view(), name="password_reset"),  # throttled
    path("password/reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path(
        "password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("password/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("password/change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("password/change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
]

tenant_patterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("usage/", usage.usage, name="usage"),
    path("usage.csv", usage.usage_csv, name="usage-csv"),
    path("keys/", keys.keys_list, name="keys"),
    path("keys/new/", keys.key_create, name="key-create"),
    path("keys/<int:key_id>/", keys.key_detail, name="key-detail"),
    path("keys/<int:key_id>/edit/", keys.key_update, name="key-update"),
    path("keys/<int:key_id>/controls/", keys.key_controls, name="key-controls"),
    path("keys/<int:key_id>/revoke/", keys.key_revoke, name="key-revoke"),
    path("keys/<int:key_id>/quotas/", keys.key_quota_add, name="key-quota-add"),
    path("keys/<int:key_id>/quotas/<int:quota_id>/delete/", keys.key_quota_delete, name="key-quota-delete"),
    path("limits/", limits.limits, name="limits"),
    path("prices/", prices.prices, name="prices"),
    path("quickstart/", quickstart.quickstart, name="quickstart"),
    path("limits/edit/", limits.limits_update, name="limits-update"),
    path("billing/", billing.billing, name="billing"),
    path("alerts/", alerts.alerts, name="alerts"),
    path("alerts/rules/new/", alerts.rule_create, name="alert-rule-create"),
    path("alerts/rules/<int:rule_id>/edit/", alerts.rule_edit, name="alert-rule-edit"),
    path("alerts/rules/<int:rule_id>/toggle/", alerts.rule_toggle, name="alert-rule-toggle"),
    path("alerts/rules/<int:rule_id>/delete/", alerts.rule_delete, name="alert-rule-delete"),
    path("alerts/channels/new/", alerts.channel_create, name="alert-channel-create"),
    path("alerts/channels/<int:channel_id>/", alerts.channel_edit, name="alert-channel"),
    path("alerts/channels/<int:channel_id>/edit/", alerts.channel_update, name="alert-channel-update"),
    path("alerts/channels/<int:channel_id>/test/", alerts.channel_test, name="alert-channel-test"),
    path("alerts/channels/<int:channel_id>/delete/", alerts.channel_delete, name="alert-channel-delete"),
]

ops_patterns = [
    path("", ops.tenants, name="ops-tenants"),
    path("plans/", ops.plans, name="ops-plans"),
    path("plans/import/", ops.plan_import, name="ops-plan-import"),
    path("plans/<int:plan_id>/", ops.plan_detail, name="ops-plan"),
    path("topup/", ops.topup, name="ops-topup"),
    path("credit-notes/", ops.credit_notes, name="ops-credit-notes"),
    path("audit/", ops.audit, name="ops-audit"),
    path("jobs/", ops.jobs, name="ops-jobs"),
    path("margins/", ops.margins, name="ops-margins"),
]

urlpatterns = [
    *auth_patterns,
    path("", home.home, name="home"),
    path("switch/", home.switch, name="tenant-switch"),
    path("t/<slug:slug>/", include(tenant_patterns)),
    path("ops/", include(ops_patterns)),
]
