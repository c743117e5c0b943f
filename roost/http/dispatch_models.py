"""Request and response models of the dispatch API (``roost.http.dispatch``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, model_validator

from roost.domain.dispatch.limits import NEXT_SEND_REASONS
from roost.domain.dispatch.sending import MAX_ERROR_CHARS
from roost.http.models import Body, Id, Out, PageQuery, QuietHours, TimeZone

Limit = Annotated[int, Field(gt=0, le=10_000_000, description="a positive number, or null for no limit")]
MAX_BATCH_ITEMS = 10_000
MAX_BODY_CHARS = 10_000
ItemStatus = Literal["pending", "dispatched", "sent", "failed", "skipped", "cancelled"]
BatchStatus = Literal["draft", "sending", "paused", "done", "cancelled"]
NextSendReason = Literal[NEXT_SEND_REASONS]  # type: ignore[valid-type]
IdempotencyKey = Annotated[str, Field(
    min_length=1, max_length=200,
    description="unique per account: a retry with the same key returns the first answer instead of a new one",
)]


class OutreachQuietHours(QuietHours):
    @model_validator(mode="after")
    def _not_empty(self) -> OutreachQuietHours:
        if self.start == self.end:
            raise ValueError("quiet_hours start and end are equal; send null for no quiet hours")
        return self


class OutreachSettingsPut(Body):
    paused: bool = False
    quiet_hours: OutreachQuietHours | None = Field(None, description="local times; start > end crosses midnight")
    timezone: TimeZone | None = Field(None, description="IANA zone of the quiet hours; null: the account's")
    max_per_minute: Limit | None = None
    max_per_hour: Limit | None = None
    max_per_day: Limit | None = None
    min_gap_seconds: float = Field(0.0, ge=0, le=86_400, allow_inf_nan=False)


class OutreachSettings(Out):
    account_id: str
    paused: bool
    quiet_hours: dict[str, str] | None
    timezone: str
    max_per_minute: int | None
    max_per_hour: int | None
    max_per_day: int | None
    min_gap_seconds: float
    updated_at: dt.datetime | None


class BatchItemIn(Body):
    to_handle: str = Field(min_length=1, max_length=320)
    body: str = Field(min_length=1, description=f"at most {MAX_BODY_CHARS:,} characters")
    device_id: Id | None = Field(None, description="default: the creator's (or account's) most recently seen device")


class BatchCreate(Body):
    account_id: Id
    # The caps are checked in the handler (400), not as schema maxItems/maxLength: a body over
    # them is usually also over the request size limit, and 413 is not what a schema violation answers.
    items: list[BatchItemIn] = Field(min_length=1, description=f"at most {MAX_BATCH_ITEMS:,} items")
    dry_run: bool = False
    created_by: Id | None = Field(None, description="the user who gets batch_done")
    idempotency_key: IdempotencyKey | None = None


class BatchCounts(Out):
    pending: int
    dispatched: int
    sent: int
    failed: int
    skipped: int
    cancelled: int


class Batch(Out):
    id: str
    account_id: str
    created_by: str | None
    idempotency_key: str | None
    status: BatchStatus
    total_items: int
    counts: BatchCounts
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class DryRunItem(Out):
    seq: int
    to_handle: str
    body: str
    device_id: str | None
    status: Literal["pending", "skipped"]
    reason: str | None


class DryRun(Out):
    dry_run: bool
    account_id: str
    items: list[DryRunItem]
    counts: BatchCounts


class NextSend(Out):
    at: dt.datetime | None = Field(description="the earliest instant the next item may go; null: not until "
                                               "something changes (unpaused, sent, a device connects)")
    reason: NextSendReason = Field(description="why not now: the constraint that sets `at` (window:minute|hour|day "
                                               "are the account's limits)")


class BatchWithNextSend(Batch):
    next_send: NextSend | None = Field(description="null: an item may go now")


class BatchListQuery(PageQuery):
    account_id: Id | None = None
    status: BatchStatus | None = None


class BatchItem(Out):
    id: str
    batch_id: str
    seq: int
    device_id: str | None
    to_handle: str
    body: str
    status: ItemStatus
    reason: str | None
    offers: int = Field(description="times offered to the device (attempts; the same id each time)")
    dispatched_at: dt.datetime | None
    lease_until: dt.datetime | None = Field(description="while dispatched: when it is offered again without a result")
    result_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime = Field(description="the last change of the item (status, lease, result)")


class DeviceQueueQuery(PageQuery):
    status: ItemStatus | None = None


class MessageCreate(Body):
    to_handle: str = Field(min_length=1, max_length=320)
    body: str = Field(min_length=1, description=f"at most {MAX_BODY_CHARS:,} characters")
    device_id: Id | None = Field(None, description="the device that sends it (exactly one of device_id, user_id)")
    user_id: Id | None = Field(None, description="sent from this user's most recently seen live device")
    account_id: Id | None = Field(None, description="if given, the device or user must be of this account (else 404)")
    idempotency_key: IdempotencyKey | None = None

    @model_validator(mode="after")
    def _one_sender(self) -> MessageCreate:
        if (self.device_id is None) == (self.user_id is None):
            raise ValueError("give exactly one of device_id and user_id")
        return self


class SendQueueItem(Out):
    id: str = Field(description="stable: the device's idempotency key")
    batch_id: str
    to_handle: str
    body: str
    created_at: dt.datetime
    updated_at: dt.datetime


class SendQueue(Out):
    items: list[SendQueueItem]
    retry_at: dt.datetime | None = Field(description="when nothing may go now, the earliest instant something may")


class SendResultIn(Body):
    status: Literal["sent", "failed"]
    error: str | None = Field(None, max_length=MAX_ERROR_CHARS)


class SendResult(Out):
    id: str
    status: Literal["sent", "failed"]
    error: str | None
    result_at: dt.datetime | None


