"""Operators' accounts and sessions.

- Passwords: argon2id (argon2-cffi's PasswordHasher, its default RFC 9106 low-memory profile);
  a hash made with older parameters is replaced at the next login.
- Sessions: a random 32-byte token in a cookie `Secure; HttpOnly; SameSite=Strict; Path=/`; the
  database keeps only its SHA-256 (a stolen backup opens no session) with the user, the CSRF token
  and the expiry (8 hours). Logout deletes the row.
- CSRF: every form carries the session's CSRF token, compared in constant time on every POST; the
  login form (before a session) carries a token that must equal its own cookie (double submit).
- Roles: viewer < operator < administrator. Only an administrator changes anything; a viewer
  sees card numbers masked.
"""

import hashlib
import hmac
import logging
import re
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from . import schema

log = logging.getLogger("collector.web.auth")
ROLES = ("viewer", "operator", "administrator")
SESSION_S = 8 * 3600
COOKIE = "tu_session"
LOGIN_COOKIE = "tu_login"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_hasher = PasswordHasher()
# Verified against when a user does not exist: the same work whether the name is known or not.
_DUMMY = _hasher.hash("not a password")


class AuthError(ValueError):
    pass


def rank(role):
    return ROLES.index(role) if role in ROLES else -1


def add_user(store, name, password, role):
    """Create or replace an account (the `user` command)."""
    if not _NAME.match(name or ""):
        raise AuthError("user name: 1-64 of A-Z a-z 0-9 _ . @ -")
    if role not in ROLES:
        raise AuthError("role must be one of %s" % ", ".join(ROLES))
    if len(password or "") < 10:
        raise AuthError("password: at least 10 characters")
    schema.ensure(store)
    h = _hasher.hash(password)
    with store._tx() as ex:
        ex.run("DELETE FROM web_users WHERE name = ?", (name,))
        ex.run("DELETE FROM web_sessions WHERE name = ?", (name,))
        ex.run(
            "INSERT INTO web_users (name, hash, role, created) VALUES (?, ?, ?, ?)",
            (name, h, role, int(time.time())),
        )
    log.info("user %s (%s) set", name, role)


def remove_user(store, name):
    schema.ensure(store)
    with store._tx() as ex:
        ex.run("DELETE FROM web_sessions WHERE name = ?", (name,))
        return ex.run("DELETE FROM web_users WHERE name = ?", (name,))


def users(store):
    schema.ensure(store)
    with store._tx(write=False) as ex:
        return [
            {"name": n, "role": r, "created": c}
            for n, r, c in ex.all("SELECT name, role, created FROM web_users ORDER BY name")
        ]


def check_password(store, name, password):
    """-> role, or None (unknown user or wrong password: the same work and the same answer)."""
    with store._tx(write=False) as ex:
        row = ex.one("SELECT hash, role FROM web_users WHERE name = ?", (name,))
    try:
        _hasher.verify(row[0] if row else _DUMMY, password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(row[0]):
        with store._tx() as ex:
            ex.run("UPDATE web_users SET hash = ? WHERE name = ?", (_hasher.hash(password), name))
    return row[1]


def _digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def new_session(store, name, now=None):
    """-> (cookie token, csrf token)."""
    now = int(now or time.time())
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with store._tx() as ex:
        ex.run("DELETE FROM web_sessions WHERE expires < ?", (now,))
        ex.run(
            "INSERT INTO web_sessions (token, name, csrf, expires) VALUES (?, ?, ?, ?)",
            (_digest(token), name, csrf, now + SESSION_S),
        )
    return token, csrf


def session(store, token, now=None):
    """-> {"name", "role", "csrf"} for a live session's cookie, else None."""
    if not token or len(token) > 100:
        return None
    now = int(now or time.time())
    with store._tx(write=False) as ex:
        row = ex.one(
            "SELECT s.name, u.role, s.csrf, s.expires FROM web_sessions s "
            "JOIN web_users u ON u.name = s.name WHERE s.token = ?",
            (_digest(token),),
        )
    if row is None or row[3] < now:
        return None
    return {"name": row[0], "role": row[1], "csrf": row[2]}


def end_session(store, token):
    if token:
        with store._tx() as ex:
            ex.run("DELETE FROM web_sessions WHERE token = ?", (_digest(token),))


THROTTLE_N = 5  # failed logins for one user name (or from one address x 4) ...
THROTTLE_S = 900  # ... within this many seconds: further attempts refused until they age out


class Throttle:
    """Failed logins per user name and per client address, in this process's memory: past
    THROTTLE_N failures for a name (4 x for an address) in THROTTLE_S seconds, logins are
    refused (429) without checking the password, so guessing costs hours, not seconds."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._f = {}

    def _recent(self, key):
        now = self.clock()
        times = [t for t in self._f.get(key, ()) if now - t < THROTTLE_S]
        if times:
            self._f[key] = times
        else:
            self._f.pop(key, None)
        return times

    def blocked(self, name, client):
        return (
            len(self._recent(("u", name.lower()))) >= THROTTLE_N
            or len(self._recent(("a", client))) >= 4 * THROTTLE_N
        )

    def failed(self, name, client):
        if len(self._f) > 100000:
            self._f.clear()
        now = self.clock()
        self._f.setdefault(("u", name.lower()), []).append(now)
        self._f.setdefault(("a", client), []).append(now)

    def clear(self, name):
        self._f.pop(("u", name.lower()), None)


def same(a, b):
    """Constant-time comparison of two tokens (False if either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
