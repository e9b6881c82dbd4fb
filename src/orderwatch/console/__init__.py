"""The operator console: server-rendered pages at ``/console`` on the API's app.

Same service layer, same tokens and roles as the HTTP API: log in with an API token, see
the overview, search orders, open one, and (role ``operator``) retry, resolve, cancel,
redeliver and run bulk actions — each confirmed, each behind a CSRF token.

>>> from orderwatch.console import mount      # doctest: +SKIP
>>> mount(app)                                # create_app does this
"""

from __future__ import annotations

from .routes import PREFIX, mount

__all__ = ["PREFIX", "mount"]
