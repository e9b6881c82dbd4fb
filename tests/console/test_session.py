"""Console sessions: ids are random and opaque, sessions end on logout, expiry, idleness,
and when their token leaves the configuration; CSRF comparison refuses non-strings."""

from __future__ import annotations

from pydantic import SecretStr

from orderwatch.api.auth import Caller
from orderwatch.console import session as s
from orderwatch.settings import ApiToken

OPS = ApiToken(name="ops", token=SecretStr("tok-ops-123456"), role="operator")
VIEW = ApiToken(name="cs", token=SecretStr("tok-cs-123456"), role="viewer")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_session_lives_until_logout() -> None:
    clock = Clock()
    sessions = s.Sessions([OPS, VIEW], clock=clock)
    sid, made = sessions.create(Caller("ops", "operator"), "tok-ops-123456")
    assert "tok-ops" not in sid
    assert len(sid) >= 40
    assert sessions.get(sid) is made
    assert sessions.get(sid + "x") is None
    assert sessions.get(None) is None
    sessions.end(sid)
    assert sessions.get(sid) is None


def test_expiry_and_idleness() -> None:
    clock = Clock()
    sessions = s.Sessions([OPS], clock=clock)
    sid, _ = sessions.create(Caller("ops", "operator"), "tok-ops-123456")
    for _ in range(int(s.LIFETIME // (s.IDLE / 2))):
        clock.t += s.IDLE / 2  # active: each request within the idle limit
        if clock.t >= 1000.0 + s.LIFETIME:
            break
        assert sessions.get(sid) is not None
    clock.t = 1000.0 + s.LIFETIME
    assert sessions.get(sid) is None  # absolute lifetime over
    sid, _ = sessions.create(Caller("ops", "operator"), "tok-ops-123456")
    clock.t += s.IDLE
    assert sessions.get(sid) is None  # idle too long


def test_removing_the_token_ends_its_sessions() -> None:
    sessions = s.Sessions([OPS, VIEW])
    ops, _ = sessions.create(Caller("ops", "operator"), "tok-ops-123456")
    cs, _ = sessions.create(Caller("cs", "viewer"), "tok-cs-123456")
    sessions.set_tokens([VIEW])
    assert sessions.get(ops) is None
    assert sessions.get(cs) is not None
    # the same name with another role is not the same caller
    sessions.set_tokens([ApiToken(name="cs", token=SecretStr("tok-cs-123456"), role="operator")])
    assert sessions.get(cs) is None


def test_sessions_are_bounded() -> None:
    clock = Clock()
    sessions = s.Sessions([OPS], clock=clock)
    for _ in range(s.MAX_SESSIONS + 10):
        sessions.create(Caller("ops", "operator"), "tok-ops-123456")
    assert len(sessions) <= s.MAX_SESSIONS


def test_csrf_ok() -> None:
    assert s.csrf_ok("abc", "abc")
    assert not s.csrf_ok("abc", "abd")
    assert not s.csrf_ok("abc", "")
    assert not s.csrf_ok("", "")
    assert not s.csrf_ok("abc", None)
    assert not s.csrf_ok("abc", ["abc"])
    assert not s.csrf_ok("abc", "ab\udcff")
