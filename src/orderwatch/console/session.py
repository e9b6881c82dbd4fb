"""Console sessions and CSRF tokens.

Logging in presents an API bearer token once, in a form; the console checks it with the
API's own :class:`~orderwatch.api.auth.TokenTable` and keeps a **server-side session** in
memory: the cookie holds only a random 256-bit session id (the token itself is never sent
back, stored in the cookie, or written to a page). The session remembers the caller, a
keyed digest of the token (so removing a token from the configuration ends its sessions),
its own CSRF token, and when it expires.

Why server-side and in memory: there is no configured signing key to share between
processes, so a signed cookie would not outlive the process either, and a server-side
session can be ended for real on logout. A restart logs everyone out; several API
processes behind one address need sticky routing for the console.

The cookie is ``HttpOnly`` and ``SameSite=Strict``, and ``Secure`` whenever the request came
over https (directly or through a proxy uvicorn trusts for ``X-Forwarded-Proto``). On plain
http — the default ``api.listen`` on loopback — it cannot be ``Secure``: a browser would not
send it back. Put the console behind TLS for anything but loopback.

Every POST carries the session's CSRF token in a hidden ``csrf`` field, compared with
:func:`hmac.compare_digest`; the login form (before there is a session) uses a
double-submit token: a random value in a short-lived cookie and the same value in the form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..api.auth import Caller
from ..settings import ApiToken

__all__ = [
    "COOKIE",
    "LIFETIME",
    "LOGIN_COOKIE",
    "Session",
    "Sessions",
    "csrf_ok",
]

COOKIE = "orderwatch_console"
LOGIN_COOKIE = "orderwatch_console_login"
LIFETIME = 8 * 3600.0  # seconds a session lasts from login
IDLE = 2 * 3600.0  # seconds without a request before it ends
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    caller: Caller
    token_tag: str
    csrf: str
    expires: float
    seen: float


def csrf_ok(expected: str, presented: object) -> bool:
    """Constant-time comparison; anything but a non-empty string is refused."""
    if not isinstance(presented, str) or not presented or not expected:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))


class Sessions:
    """The console's sessions, in this process's memory, keyed by a digest of the id."""

    def __init__(
        self, tokens: Iterable[ApiToken], *, clock: Callable[[], float] | None = None
    ) -> None:
        self._key = secrets.token_bytes(32)
        self._sessions: dict[bytes, Session] = {}
        self._known: dict[str, Caller] = {}
        self._next_sweep = 0.0
        self.set_tokens(tokens)
        self._now: Callable[[], float] = clock or time.monotonic

    def set_tokens(self, tokens: Iterable[ApiToken]) -> None:
        """The configured tokens, as keyed digests; a session whose token left ends."""
        self._known = {self.tag(t.token.get_secret_value()): Caller(t.name, t.role) for t in tokens}

    def tag(self, token: str) -> str:
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        return hmac.new(self._key, b"token|" + digest, hashlib.sha256).hexdigest()

    def _id_key(self, session_id: str) -> bytes:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).digest()

    def create(self, caller: Caller, token: str) -> tuple[str, Session]:
        now = self._now()
        self._prune(now)
        session_id = secrets.token_urlsafe(32)
        session = Session(
            caller=caller,
            token_tag=self.tag(token),
            csrf=secrets.token_urlsafe(32),
            expires=now + LIFETIME,
            seen=now,
        )
        self._sessions[self._id_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        key = self._id_key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._now()
        known = self._known.get(session.token_tag)
        if (
            now >= session.expires
            or now - session.seen >= IDLE
            or known is None
            or known != session.caller
        ):
            del self._sessions[key]
            return None
        session.seen = now
        return session

    def end(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(self._id_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self, now: float) -> None:
        """Drop ended sessions (a sweep at most once a minute), then the oldest logins
        while at the cap, so a flood of logins costs O(1) each."""
        if len(self._sessions) >= MAX_SESSIONS // 2 and now >= self._next_sweep:
            self._next_sweep = now + 60.0
            for key, s in list(self._sessions.items()):
                if now >= s.expires or now - s.seen >= IDLE:
                    del self._sessions[key]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
