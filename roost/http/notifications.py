"""Notifications, watches, topic events and digests (service token), and the one-click unsubscribe link (signed token).

``GET /unsubscribe?token=`` is what a person opening the link sees: it checks the token and
shows a page with one button, so link scanners and prefetchers cannot unsubscribe anybody.
``POST /unsubscribe?token=`` is the RFC 8058 one-click request a mail client sends
(``List-Unsubscribe=One-Click``): it turns the user's digest off.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator
from quart import Blueprint, Response
from quart_schema import hide, validate_querystring, validate_request, validate_response

from roost.domain import watchers
from roost.domain.digest import notify, unsubscribe
from roost.domain.digest.tick import run_tick
from roost.errors import InvalidInput, MissingReference, NotFound
from roost.http.admin import documented_errors
from roost.http.auth import service_auth
from roost.http.context import services
from roost.http.models import Body, Id, Out, Page, PageQuery, _refuse_nul
from roost.storage import digests, notifications, tenancy

bp = Blueprint("notifications", __name__)
unsubscribe_bp = Blueprint("unsubscribe", __name__)

Kind = Field(min_length=1, max_length=100)
TOPIC_MAX = 300
Topic = Field(min_length=1, max_length=TOPIC_MAX)
_WATCH_CURSOR = re.compile(r"^[A-Za-z0-9_-]{0,420}$")


class NotificationCreate(Body):
    recipient_user_id: Id
    event_kind: str = Kind
    topic: str = Topic
    actor_user_id: Id | None = None
    payload: dict[str, Any] = Field(default_factory=dict,
                                    description="free JSON; `category` (a string) steers e-mail and digests")
    email: bool = Field(False, description="with category personal-direct: e-mailed at once (quiet hours respected)")

    @field_validator("payload")
    @classmethod
    def _category_is_text(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "category" in value and not isinstance(value["category"], str):
            raise ValueError("payload.category must be a string")
        return value


class Notification(Out):
    id: str
    recipient_user_id: str
    event_kind: str
    topic: str
    actor_user_id: str | None
    payload: dict[str, Any]
    email: bool
    created_at: dt.datetime
    read_at: dt.datetime | None
    email_sent_at: dt.datetime | None
    digest_included_at: dt.datetime | None


class NotificationListQuery(PageQuery):
    unread: bool = False


class WatchCreate(Body):
    user_id: Id
    topic: str = Topic


class Watch(Out):
    user_id: str
    topic: str
    created_at: dt.datetime
    last_participation_at: dt.datetime


class TopicEventCreate(Body):
    event_kind: str = Kind
    actor_user_id: Id
    payload: dict[str, Any] = Field(default_factory=dict, description="free JSON (at most 16 KiB, copied to every "
                                    "watcher); `category` (a string) steers e-mail and digests")
    email: bool = Field(False, description="with category personal-direct: each watcher is e-mailed at once")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200,
                                        description="a repeat with the same key and body answers the first answer "
                                                    "and notifies nobody again; with another body: 409")

    @field_validator("payload")
    @classmethod
    def _category_is_text(cls, value: dict[str, Any]) -> dict[str, Any]:
        return NotificationCreate._category_is_text(value)


class TopicEventResult(Out):
    notified: int = Field(description="notifications made: the topic's active watchers in the actor's account, "
                                      "the actor left out")


class WatchListQuery(PageQuery):
    cursor: str | None = Field(None, max_length=420, description="next_cursor of the previous page")

    @field_validator("cursor")
    @classmethod
    def _cursor_shape(cls, value: str | None) -> str | None:  # a topic (up to 300 characters), base64url
        if value is not None and not _WATCH_CURSOR.match(value):
            raise InvalidInput("cursor is not one this endpoint handed out", code="bad_cursor")
        return value or None


class WatchDelete(Body):
    user_id: Id
    topic: str = Topic


class DigestRun(Out):
    released: int = Field(description="held messages queued because their quiet hours ended")
    decayed: int = Field(description="watches dropped for lack of participation")
    due: int = Field(description="users whose slot had come")
    digests: int = Field(description="digests queued for sending")
    empty: int = Field(description="due users with nothing to report (period recorded, no mail)")
    batches: int
    notifications: int = Field(description="notifications included in digests")


class UnsubscribeQuery(BaseModel):
    token: str = Field(min_length=1, max_length=200)

    refuse_nul = model_validator(mode="before")(_refuse_nul)


class Unsubscribed(Out):
    user_id: str
    digest_cadence: str


@bp.post("/api/v1/notifications")
@service_auth
@validate_request(NotificationCreate)
@validate_response(Notification, 201)
@documented_errors(400, 401, 413, 503)
async def create_notification(data: NotificationCreate) -> tuple[dict[str, Any], int]:
    try:
        row = await notify.create(services(), **data.model_dump())
    except NotFound as exc:
        raise MissingReference(exc.message) from exc
    return row, 201


@bp.get("/api/v1/users/<user_id>/notifications")
@service_auth
@validate_querystring(NotificationListQuery)
@validate_response(Page[Notification])
@documented_errors(400, 401, 404, 503)
async def list_notifications(user_id: str, query_args: NotificationListQuery) -> dict[str, Any]:
    db = services().db
    await tenancy.get_user(db, user_id)
    return await notifications.list_for_user(db, user_id, unread=query_args.unread, limit=query_args.limit,
                                             cursor=query_args.cursor)


@bp.post("/api/v1/notifications/<notification_id>/read")
@service_auth
@validate_response(Notification)
@documented_errors(401, 404, 503)
async def read_notification(notification_id: str) -> dict[str, Any]:
    s = services()
    async with s.db.transaction() as tx:
        return await notifications.mark_read(tx, notification_id, s.clock.now())


@bp.post("/api/v1/watches")
@service_auth
@validate_request(WatchCreate)
@validate_response(Watch, 201)
@documented_errors(400, 401, 413, 503)
async def create_watch(data: WatchCreate) -> tuple[dict[str, Any], int]:
    """Watch a topic (watching again renews the watch: it counts as participation)."""
    s = services()
    async with s.db.transaction() as tx:
        try:
            await tenancy.get_user(tx, data.user_id)
        except NotFound as exc:
            raise MissingReference(exc.message) from exc
        return await notifications.watch(tx, user_id=data.user_id, topic=data.topic, now=s.clock.now()), 201


@bp.get("/api/v1/users/<user_id>/watches")
@service_auth
@validate_querystring(WatchListQuery)
@validate_response(Page[Watch])
@documented_errors(400, 401, 404, 503)
async def list_watches(user_id: str, query_args: WatchListQuery) -> dict[str, Any]:
    """List the topics a user watches, in topic order."""
    return await watchers.list_watches(services(), user_id, limit=query_args.limit, cursor=query_args.cursor)


@bp.delete("/api/v1/watches")
@service_auth
@validate_request(WatchDelete)
@validate_response(Watch)
@documented_errors(400, 401, 404, 413, 503)
async def delete_watch(data: WatchDelete) -> dict[str, Any]:
    """Stop a user watching a topic; answers the watch as it was (404 if there was none)."""
    return await watchers.unwatch(services(), user_id=data.user_id, topic=data.topic)


@bp.post("/api/v1/topics/<path:topic>/events")
@service_auth
@validate_request(TopicEventCreate)
@validate_response(TopicEventResult, 201)
@documented_errors(400, 401, 404, 409, 413, 503)
async def publish_topic_event(topic: str, data: TopicEventCreate) -> tuple[dict[str, Any], int]:
    """Publish an event on a topic: one notification for each of its other watchers.

    Every active watcher of the topic in the actor's account but the actor is notified, in one
    transaction; the actor takes part in the topic, and so watches it. The topic is the path's
    percent-encoded rest (slashes allowed). A repeat with the same ``idempotency_key`` and body
    answers the first answer; the same key with another body is 409 ``idempotency_key_reused``.
    """
    if not 1 <= len(topic) <= TOPIC_MAX:  # (a path with NUL never gets here: roost.http.app answers 404)
        raise InvalidInput(f"topic must be 1 to {TOPIC_MAX} characters", code="invalid_topic")
    return await watchers.publish_event(services(), topic=topic, **data.model_dump()), 201


@bp.post("/api/admin/digest/run")
@service_auth
@validate_response(DigestRun)
@documented_errors(401, 409, 503)
async def run_digest() -> dict[str, Any]:
    """Run one digest tick now (409 while another tick runs, here or in another process)."""
    return await run_tick(services())


async def _verified_user(token: str) -> tuple[str, int]:
    """(user id, epoch) of a valid link whose epoch is still the user's.

    Raises:
        InvalidInput: a link not signed by a configured key, or one from before a re-subscribe.
        NotFound: the user is gone.
    """
    s = services()
    verified = unsubscribe.verify(await unsubscribe.keys(s), token)
    if verified is None:
        verified = unsubscribe.verify_legacy(await unsubscribe.legacy_keys(s), token)
    if verified is None:
        raise InvalidInput("this unsubscribe link is not valid (it may be cut short)", code="invalid_token")
    user_id, epoch = verified
    current = await digests.unsubscribe_epoch(s.db, user_id)
    if current is None:
        raise NotFound("the user of this link no longer exists")
    if current != epoch:
        raise InvalidInput("this unsubscribe link is from before the digest was turned back on; use the link in "
                           "the latest digest", code="invalid_token")
    return user_id, epoch


@unsubscribe_bp.get("/unsubscribe")
@hide
@validate_querystring(UnsubscribeQuery)
async def unsubscribe_page(query_args: UnsubscribeQuery) -> Response:
    """A page with one button that confirms; the GET itself changes nothing."""
    await _verified_user(query_args.token)
    token = html.escape(query_args.token, quote=True)
    page = (
        "<!doctype html><html><body><form method=post action=\"/unsubscribe?token=" + token + "\">"
        "<input type=hidden name=List-Unsubscribe value=One-Click>"
        "<p>Stop receiving digest e-mails?</p><button type=submit>Unsubscribe</button></form></body></html>"
    )
    return Response(page, content_type="text/html; charset=utf-8")


@unsubscribe_bp.post("/unsubscribe")
@hide  # for mail clients and browsers, not API clients: kept out of the spec with its GET page
@validate_querystring(UnsubscribeQuery)
@validate_response(Unsubscribed)
async def unsubscribe_one_click(query_args: UnsubscribeQuery) -> dict[str, Any]:
    """RFC 8058 one-click: turn the signed user's digest off (idempotent)."""
    s = services()
    user_id, epoch = await _verified_user(query_args.token)
    async with s.db.transaction() as tx:
        if not await digests.unsubscribe(tx, user_id, s.clock.now(), epoch=epoch):
            raise InvalidInput("this unsubscribe link is from before the digest was turned back on",
                               code="invalid_token")  # a re-subscribe landed since the check above
    return {"user_id": user_id, "digest_cadence": "off"}
