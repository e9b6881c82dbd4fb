"""Notification channels beyond the built-in log and webhook ones (:mod:`orderwatch.notify`).

Each module offers a factory ``f(notify_settings, *, clock=None) -> Channel`` registered in
the entry point group ``orderwatch.notifiers`` under the URL schemes it serves.
"""
