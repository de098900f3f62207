"""Browser views, one module per area. Thin: parse, call a selector or a service, render.

Every view is wrapped in `portal.web.access.portal_view`, which does login, tenant membership
(404 for a stranger) and the role check, and passes the resolved `PortalContext`.
"""
