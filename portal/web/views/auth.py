"""Login lockout and the throttled password reset: the 429 page both show."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse

from accounts.client_ip import client_ip
from portal.web.reset_limits import password_reset_allowed
from portal.web.views.common import page

TOO_MANY_REQUESTS = 429


def too_many_attempts(request: HttpRequest, *, reason: str, minutes: int) -> HttpResponse:
    response = page(
        request, "registration/too_many_attempts.html", {"reason": reason, "minutes": minutes}, TOO_MANY_REQUESTS
    )
    response["Retry-After"] = str(minutes * 60)
    return response


def locked_out(request: HttpRequest, original_response: HttpResponse | None = None, credentials=None) -> HttpResponse:
    """django-axes' lockout answer (AXES_LOCKOUT_CALLABLE), for the portal's and the admin's login.

    Every failure during a lockout starts the cool-off again, so the wait is the whole of it.
    """
    return too_many_attempts(request, reason="login", minutes=settings.LOGIN_COOLOFF_MINUTES)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset form, refused with 429 above the per-email or per-address limit."""

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not password_reset_allowed(email=request.POST.get("email", ""), address=client_ip(request)):
            return too_many_attempts(request, reason="password_reset", minutes=settings.PASSWORD_RESET_WINDOW_MINUTES)
        return super().post(request, *args, **kwargs)
