"""Accounts: users, API keys, passwords, the training opt-out, and deleting a user's data."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

import sqlalchemy as sa

from imageloop.errors import AuthError, ConflictError, InvalidRequestError, NotFoundError, StorageError
from imageloop.storage._convert import api_key_record, user_record
from imageloop.storage.blobs import BlobStore, jpeg_copy_key
from imageloop.storage.db import SessionFactory, get_row, read_session, write_session
from imageloop.storage.models import ApiKey, Generation, Image, PromptPreviewRow, User, UserAction
from imageloop.storage.records import ApiKeyId, ApiKeyInfo, UserAccount, UserId, new_id, utcnow

log = logging.getLogger(__name__)

API_KEY_PREFIX = "il_"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 8


def hash_api_key(key: str) -> str:
    """The stored form of an API key: sha256 hex (the key is 256 random bits, so no salt or stretching is needed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password`` in the form ``scrypt$n$r$p$salt$hash``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    encode = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


@cache
def _dummy_password_hash() -> str:
    # Hashed against when the user is unknown or has no password, so every sign-in costs one scrypt: the answer
    # takes as long whether the name exists or not.
    return hash_password(secrets.token_urlsafe(16))


def check_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a hash made by :func:`hash_password` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True, slots=True)
class DeletedData:
    """What ``delete_user_data`` removed."""

    generations: int
    images: int
    actions: int
    blobs: int


class UserRepository:
    """Users and their API keys. Every method runs in its own transaction."""

    def __init__(
        self, sessions: SessionFactory, *, clock: Callable[[], datetime] = utcnow, max_api_keys: int = 20,
        sign_in_key_ttl: timedelta | None = timedelta(days=30),
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self.max_api_keys = max_api_keys  # settings.auth.max_api_keys_per_user
        self.sign_in_key_ttl = sign_in_key_ttl  # settings.auth.session_key_ttl_hours; None = never expires

    def create_user(self, name: str, *, is_admin: bool = False) -> tuple[UserAccount, str]:
        """Create a user and a first API key; return the user and the key (shown once, stored only hashed).

        Raises InvalidRequestError for a malformed name, ConflictError when the name is taken.
        """
        if not _NAME_PATTERN.match(name):
            raise InvalidRequestError(
                "name", f"invalid user name {name!r}", value=name,
                allowed="1-64 characters: letters, digits, '_', '.', '@', '-'; starting with a letter or digit",
            )
        with write_session(self._sessions) as session:
            if session.scalar(sa.select(User.id).where(User.name == name)) is not None:
                raise ConflictError(f"name: a user named {name!r} already exists")
            user = User(id=new_id(), name=name, is_admin=is_admin, training_opt_out=False, created_at=self._clock())
            session.add(user)
            session.flush()
            key_row, key = self._new_key(user.id)
            session.add(key_row)
            return user_record(user), key

    def _new_key(self, user_id: str, *, from_sign_in: bool = False) -> tuple[ApiKey, str]:
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        ttl = self.sign_in_key_ttl if from_sign_in else None
        row = ApiKey(
            id=new_id(), user_id=user_id, key_hash=hash_api_key(key), prefix=key[:10], created_at=now,
            expires_at=now + ttl if ttl is not None else None, from_sign_in=from_sign_in,
        )
        return row, key

    def create_api_key(self, user_id: UserId) -> tuple[ApiKeyInfo, str]:
        """A new API key for the user; the plain key is returned once and never stored. ConflictError (409) naming
        the limit when the user already holds ``max_api_keys`` live keys."""
        with write_session(self._sessions) as session:
            self._live_user(session, user_id, lock=True)
            if len(self._live_keys(session, user_id)) >= self.max_api_keys:
                raise ConflictError(
                    f"api_keys: a user may hold at most {self.max_api_keys} live API keys "
                    "(auth.max_api_keys_per_user); revoke one first"
                )
            row, key = self._new_key(user_id)
            session.add(row)
            return api_key_record(row), key

    def create_sign_in_key(self, user_id: UserId) -> tuple[ApiKeyInfo, str]:
        """A key for a client that signed in with a password: it expires after ``sign_in_key_ttl``. At the key cap
        the user's oldest sign-in keys are revoked to make room (so signing in always works); when every live key
        was created by hand, ConflictError (409) naming the limit."""
        with write_session(self._sessions) as session:
            self._live_user(session, user_id, lock=True)
            live = self._live_keys(session, user_id)
            excess = len(live) - self.max_api_keys + 1
            oldest_sign_in = [row for row in live if row.from_sign_in][:max(excess, 0)]
            if len(oldest_sign_in) < excess:
                raise ConflictError(
                    f"api_keys: a user may hold at most {self.max_api_keys} live API keys "
                    "(auth.max_api_keys_per_user); revoke one first"
                )
            for row in oldest_sign_in:
                row.revoked_at = self._clock()
            row, key = self._new_key(user_id, from_sign_in=True)
            session.add(row)
            return api_key_record(row), key

    def _live_keys(self, session: sa.orm.Session, user_id: str) -> list[ApiKey]:
        """The user's keys neither revoked nor expired, oldest first."""
        now = self._clock()
        return list(session.scalars(
            sa.select(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None),
                                    sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))
            .order_by(ApiKey.created_at, ApiKey.id)
        ))

    def authenticate(self, key: str) -> UserAccount:
        """The user owning ``key``; AuthError when the key is unknown, revoked, expired, or its user deleted."""
        if not key.startswith(API_KEY_PREFIX) or len(key) > 128:
            raise AuthError("invalid API key")
        with read_session(self._sessions) as session:
            row = session.execute(
                sa.select(User, ApiKey.revoked_at, ApiKey.expires_at).join(ApiKey, ApiKey.user_id == User.id)
                .where(ApiKey.key_hash == hash_api_key(key))
            ).first()
            if row is None or row[1] is not None or row[0].deleted_at is not None:
                raise AuthError("invalid API key")
            if row[2] is not None and row[2] <= self._clock():
                raise AuthError("API key expired: sign in again")
            return user_record(row[0])

    def get(self, user_id: UserId) -> UserAccount:
        """The user with this id (deleted ones included); NotFoundError if none."""
        with read_session(self._sessions) as session:
            user = get_row(session, User, user_id, f"user {user_id!r} not found")
            return user_record(user)

    def get_by_name(self, name: str) -> UserAccount:
        """The user with this name; NotFoundError if none."""
        with read_session(self._sessions) as session:
            user = session.scalar(sa.select(User).where(User.name == name))
            if user is None:
                raise NotFoundError(f"user {name!r} not found")
            return user_record(user)

    def list_users(self) -> list[UserAccount]:
        """All users, by name."""
        with read_session(self._sessions) as session:
            return [user_record(u) for u in session.scalars(sa.select(User).order_by(User.name))]

    def list_api_keys(self, user_id: UserId) -> list[ApiKeyInfo]:
        """The user's keys (revoked ones included), oldest first."""
        with read_session(self._sessions) as session:
            rows = session.scalars(sa.select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at))
            return [api_key_record(row) for row in rows]

    def revoke_api_key(self, user_id: UserId, key_id: ApiKeyId) -> ApiKeyInfo:
        """Revoke one of the user's keys (a no-op if already revoked); NotFoundError if it is not theirs."""
        with write_session(self._sessions) as session:
            row = get_row(session, ApiKey, key_id, f"API key {key_id!r} not found", user_id=user_id)
            if row.revoked_at is None:
                row.revoked_at = self._clock()
            return api_key_record(row)

    def set_password(self, user_id: UserId, password: str) -> None:
        """Set (or replace) the user's password; InvalidRequestError if it is shorter than 8 characters."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise InvalidRequestError("password", f"must be at least {MIN_PASSWORD_LENGTH} characters long")
        if len(password) > 1024:
            raise InvalidRequestError("password", "must be at most 1024 characters long")
        hashed = hash_password(password)
        with write_session(self._sessions) as session:
            self._live_user(session, user_id).password_hash = hashed

    def verify_password(self, name: str, password: str) -> UserAccount:
        """The user when name and password match; AuthError otherwise (same message either way). One scrypt hash is
        computed either way (against a dummy hash when the user is unknown or has no password), so the answer takes
        as long for a name that does not exist."""
        with read_session(self._sessions) as session:
            user = session.scalar(sa.select(User).where(User.name == name, User.deleted_at.is_(None)))
            stored = user.password_hash if user is not None else None
            matches = check_password(password, stored if stored is not None else _dummy_password_hash())
            if user is None or stored is None or not matches:
                raise AuthError("wrong user name or password")
            return user_record(user)

    def set_training_opt_out(self, user_id: UserId, opt_out: bool) -> UserAccount:
        """Opt the user out of (or back into) training use; exports skip opted-out users entirely."""
        with write_session(self._sessions) as session:
            user = self._live_user(session, user_id)
            user.training_opt_out = opt_out
            return user_record(user)

    def delete_user_data(self, user_id: UserId, blobs: BlobStore) -> DeletedData:
        """Delete every generation, image (row and bytes), action and prompt preview of the user; the account stays.

        Rows go first in one transaction, so no later export can see them; then the image bytes. Raises
        StorageError naming the blobs that could not be deleted (the rows are gone by then).
        """
        with write_session(self._sessions) as session:
            self._user(session, user_id)
            keys = list(session.scalars(sa.select(Image.blob_key).where(Image.user_id == user_id)))
            actions = _delete_count(session, sa.delete(UserAction).where(UserAction.user_id == user_id))
            images = _delete_count(session, sa.delete(Image).where(Image.user_id == user_id))
            # No need to delete children first: parent_id is ON DELETE SET NULL and all rows go in one statement.
            generations = _delete_count(session, sa.delete(Generation).where(Generation.user_id == user_id))
            session.execute(sa.delete(PromptPreviewRow).where(PromptPreviewRow.user_id == user_id))
        failed: list[str] = []
        for key in [blob for image_key in keys for blob in (image_key, jpeg_copy_key(image_key))]:
            try:
                blobs.delete(key)
            except StorageError as exc:
                log.warning("could not delete blob %s: %s", key, exc)
                failed.append(key)
        if failed:
            raise StorageError(f"deleted the records but not {len(failed)} image file(s): {', '.join(failed[:5])}")
        return DeletedData(generations=generations, images=images, actions=actions, blobs=len(keys))

    def delete_user(self, user_id: UserId, blobs: BlobStore) -> DeletedData:
        """Delete all the user's data, revoke their keys and mark the account deleted (the name stays reserved)."""
        deleted = self.delete_user_data(user_id, blobs)
        now = self._clock()
        with write_session(self._sessions) as session:
            user = self._user(session, user_id)
            user.deleted_at = user.deleted_at or now
            user.password_hash = None
            session.execute(
                sa.update(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
            )
        return deleted

    @staticmethod
    def _user(session: sa.orm.Session, user_id: str) -> User:
        return get_row(session, User, user_id, f"user {user_id!r} not found")

    def _live_user(self, session: sa.orm.Session, user_id: str, *, lock: bool = False) -> User:
        if lock:  # serialise key creation per user on PostgreSQL, so two requests cannot both pass the cap
            session.execute(sa.select(User.id).where(User.id == user_id).with_for_update())
        user = self._user(session, user_id)
        if user.deleted_at is not None:
            raise NotFoundError(f"user {user_id!r} was deleted")
        return user


def _delete_count(session: sa.orm.Session, statement: sa.Delete) -> int:
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0))
