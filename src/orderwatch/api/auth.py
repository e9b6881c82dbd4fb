"""Bearer tokens from ``[[api.tokens]]``, mapped to roles.

=========  ==========================================================
role       may
=========  ==========================================================
platform   submit orders, update payment, read
operator   retry, resolve, cancel, bulk actions, redeliver, pause
           vendors, update payment, read
viewer     read, with the recipient's phone and address masked
=========  ==========================================================

A presented token is compared with *every* configured token in constant time (SHA-256
digests through :func:`hmac.compare_digest`, so neither the position of the match nor the
length of a token shows in the timing). Tokens are never logged; the caller's ``name`` is
what appears in logs and on the events an action writes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ..settings import ApiToken

Role = Literal["platform", "operator", "viewer"]

READ: frozenset[Role] = frozenset({"platform", "operator", "viewer"})
CREATE: frozenset[Role] = frozenset({"platform"})
PAYMENT: frozenset[Role] = frozenset({"platform", "operator"})
ACT: frozenset[Role] = frozenset({"operator"})


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    role: Role

    @property
    def masked(self) -> bool:
        """A viewer sees the recipient's phone and address masked."""
        return self.role == "viewer"


class Unauthenticated(Exception):
    """No token, a malformed header, or a token nobody configured (401)."""

    def __init__(self, detail: str, *, invalid_token: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.invalid_token = invalid_token


class Forbidden(Exception):
    """A known caller whose role may not do this (403)."""

    def __init__(self, caller: Caller, allowed: Iterable[Role]) -> None:
        wanted = " or ".join(sorted(allowed))
        super().__init__(f"{caller.name!r} has role {caller.role}; this needs {wanted}")
        self.detail = str(self)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenTable:
    """The configured tokens, kept only as digests, with the caller each one names."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._entries = [
            (_digest(t.token.get_secret_value()), Caller(t.name, t.role)) for t in tokens
        ]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def identify(self, authorization: str | None) -> Caller:
        """The caller an ``Authorization`` header names, or :class:`Unauthenticated`."""
        if not self._entries:
            raise Unauthenticated(
                "no API tokens are configured (api.tokens), so every call is refused"
            )
        if not authorization:
            raise Unauthenticated("send 'Authorization: Bearer <token>'")
        scheme, _, presented = authorization.partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise Unauthenticated("send 'Authorization: Bearer <token>'", invalid_token=True)
        digest = _digest(presented)
        found: Caller | None = None
        for known, caller in self._entries:  # no early exit: every token is compared
            if hmac.compare_digest(digest, known) and found is None:
                found = caller
        if found is None:
            raise Unauthenticated("unknown token", invalid_token=True)
        return found

    def authorize(self, authorization: str | None, allowed: frozenset[Role]) -> Caller:
        return check_role(self.identify(authorization), allowed)


def check_role(caller: Caller, allowed: frozenset[Role]) -> Caller:
    if caller.role not in allowed:
        raise Forbidden(caller, allowed)
    return caller
