"""The citizen's inbox."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone, translation
from django.utils.functional import Promise

from accounts.errors import (
    AccountsError,
)
from accounts.models import (
    Message,
    User,
)
from config.errors import NOT_FOUND
from config.purge import delete_in_batches

# --- Inbox ------------------------------------------------------------------------------


def _in_every_language(text: Promise | str, params: Mapping[str, Any] | None) -> dict[str, str]:
    return _rendered([(text, params)])[0]


def _said(value: Any, said: dict[int, str]) -> str:
    """``value`` as text in the active language; a lazy text once per
    object (``said`` is keyed by identity: its objects must outlive it)."""
    if not isinstance(value, Promise):
        return str(value)
    key = id(value)
    if key not in said:
        said[key] = str(value)
    return said[key]


def _rendered(
    texts: Sequence[tuple[Promise | str, Mapping[str, Any] | None]],
) -> list[dict[str, str]]:
    """Each (template, params) rendered in every supported language, one
    language switch per language for all of them."""
    rendered: list[dict[str, str]] = [{} for _ in texts]
    for code, _name in settings.LANGUAGES:
        # A template or value shared by many posts (a batch's status label)
        # is translated once per language, not once per post.
        said: dict[int, str] = {}
        with translation.override(code):
            for (text, params), into in zip(texts, rendered, strict=True):
                values = {key: _said(value, said) for key, value in (params or {}).items()}
                into[code] = _said(text, said) % values if values else _said(text, said)
    return rendered


@dataclass(frozen=True)
class Post:
    """One message to one citizen (see :func:`message_post`)."""

    user_id: Any
    kind: str
    title: Promise | str
    body: Promise | str
    params: Mapping[str, Any] | None = None
    data: Mapping[str, Any] | None = None


def message_post(
    *,
    user: User,
    kind: str,
    title: Promise | str,
    body: Promise | str,
    params: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Message:
    """Post a message to a citizen's inbox (what other apps call).

    ``title`` and ``body`` are translatable templates (``gettext_lazy``) with
    ``%(name)s`` placeholders filled from ``params``; they are rendered once
    per supported language, so each reader sees their own.
    """
    return messages_post([Post(user.pk, kind, title, body, params, data)])[0]


def messages_post(posts: Sequence[Post]) -> list[Message]:
    """Post several messages in one statement (see :func:`message_post`)."""
    return Message.objects.bulk_create(messages_prepared(posts))


def messages_prepared(posts: Sequence[Post]) -> list[Message]:
    """The messages :func:`messages_post` writes, rendered, not yet saved:
    for a caller that writes them with its own rows in one statement
    (:func:`config.queries.rows_insert`)."""
    titles = _rendered([(post.title, post.params) for post in posts])
    bodies = _rendered([(post.body, post.params) for post in posts])
    return [
        Message(
            user_id=post.user_id,
            kind=post.kind,
            title=title,
            body=body,
            data=dict(post.data or {}),
        )
        for post, title, body in zip(posts, titles, bodies, strict=True)
    ]


def message_mark_read(*, user: User, message_id: Any) -> Message:
    message = Message.objects.filter(user=user, pk=message_id).first()
    if message is None:
        raise AccountsError(NOT_FOUND)
    if message.read_at is None:
        message.read_at = timezone.now()
        message.save(update_fields=["read_at"])
    return message


def messages_mark_all_read(*, user: User) -> int:
    return Message.objects.filter(user=user, read_at__isnull=True).update(read_at=timezone.now())


def messages_erase(user: User) -> None:
    Message.objects.filter(user=user).delete()


def messages_of_closed_accounts_purge() -> int:
    """Messages posted to accounts after they closed (a department finishing
    a case, a refund settling): nobody can read them, and the close erased
    the inbox they would join. Posting asks no account row (the routing
    batch posts many at once), so they go here, daily."""
    return delete_in_batches(Message.objects.filter(user__closed_at__isnull=False))
