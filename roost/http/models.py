"""Request and response models shared by the routes (pydantic; quart-schema validates and documents them).

Request bodies are strict (no "5" for 5) and refuse unknown fields, so a typo is an error
instead of a silently ignored setting. Query strings are parsed leniently, since every value
in a URL is a string.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from roost.errors import InvalidInput
from roost.runtime.jsonlimits import strings
from roost.storage.pagination import DEFAULT_LIMIT, MAX_LIMIT

T = TypeVar("T")

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Europe/Berlin')") from exc
    return value


def _hhmm(value: str) -> str:
    if not _HHMM.match(value):
        raise ValueError("expected a local time as 'HH:MM', 00:00 to 23:59")
    return value


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not an e-mail address")
    return value.lower()


TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_timezone)]
LocalTime = Annotated[str, AfterValidator(_hhmm)]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=64)]
Role = Literal["owner", "admin", "engineer", "member"]
Cadence = Literal["off", "daily", "weekly"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _refuse_nul(value: Any) -> Any:
    """PostgreSQL cannot store U+0000 in text or jsonb; refuse it up front, the same on every backend."""
    if any("\x00" in text for text in strings(value)):  # a loop: a deep body cannot overflow the stack
        raise ValueError("text may not contain the NUL character (\\u0000)")
    return value


class Body(BaseModel):
    """Base of request bodies: strict types, no unknown fields, no NUL characters."""

    model_config = ConfigDict(strict=True, extra="forbid")

    refuse_nul = model_validator(mode="before")(_refuse_nul)


class Out(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(from_attributes=True)


# Every cursor roost hands out is ids, digits and url-safe base64 (see each list's storage function).
_CURSOR = re.compile(r"^[A-Za-z0-9_.=-]{0,64}$")


class PageQuery(BaseModel):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(None, max_length=64)

    refuse_nul = model_validator(mode="before")(_refuse_nul)

    @field_validator("cursor")
    @classmethod
    def _cursor_shape(cls, value: str | None) -> str | None:
        # Raised as InvalidInput (pydantic lets it through) so the answer is 400 bad_cursor, as the
        # lists that parse their cursor further answer for one they did not hand out.
        if value is not None and not _CURSOR.match(value):
            raise InvalidInput("cursor is not one this endpoint handed out", code="bad_cursor")
        return value or None


class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None


class QuietHours(Body):
    start: LocalTime
    end: LocalTime


Team = Annotated[str, Field(min_length=1, max_length=200, description="an app's team name")]


class AccountCreate(Body):
    name: Name
    timezone: TimeZone = "UTC"
    assess_parks: bool = Field(False, description="assess parked handoffs too (escalations always are)")


class AccountPatch(Body):
    name: Name | None = None
    timezone: TimeZone | None = None
    assess_parks: bool | None = None

    @model_validator(mode="after")
    def _not_null(self) -> AccountPatch:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null (leave it out to keep it)")
        return self

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class Account(Out):
    id: str
    name: str
    timezone: str
    assess_parks: bool
    created_at: dt.datetime


class AccountListQuery(PageQuery):
    name: Name | None = Field(None, description="only accounts with exactly this name")


class UserCreate(Body):
    account_id: Id
    email: Email
    display_name: Name
    timezone: TimeZone | None = Field(None, description="defaults to the account's time zone")
    role: Role = "member"
    active: bool = True
    digest_cadence: Cadence = "off"
    digest_time: LocalTime = "08:00"
    digest_weekday: Weekday = "monday"
    quiet_hours: QuietHours | None = None
    team: Team | None = None


class UserPatch(Body):
    email: Email | None = None
    display_name: Name | None = None
    timezone: TimeZone | None = None
    role: Role | None = None
    active: bool | None = None
    digest_cadence: Cadence | None = None
    digest_time: LocalTime | None = None
    digest_weekday: Weekday | None = None
    quiet_hours: QuietHours | None = Field(None, description="null clears quiet hours")
    team: Team | None = Field(None, description="null takes the user out of their team")

    @model_validator(mode="after")
    def _only_quiet_hours_nullable(self) -> UserPatch:
        for name in self.model_fields_set:
            if getattr(self, name) is None and name not in ("quiet_hours", "team"):
                raise ValueError(f"{name} cannot be null (leave it out to keep it)")
        return self

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent; ``quiet_hours: null`` clears them."""
        out: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            out[name] = value.model_dump() if isinstance(value, BaseModel) else value
        return out


class User(Out):
    id: str
    account_id: str
    email: str
    display_name: str
    timezone: str
    role: Role
    active: bool
    digest_cadence: Cadence
    digest_time: str
    digest_weekday: Weekday
    quiet_hours: dict[str, str] | None
    team: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class UserListQuery(PageQuery):
    account_id: Id


class DeviceCreate(Body):
    user_id: Id
    name: Name


class Device(Out):
    id: str
    user_id: str
    name: str
    created_at: dt.datetime
    last_seen_at: dt.datetime | None
    revoked_at: dt.datetime | None


class DeviceCreated(Device):
    token: str = Field(description="shown once; store it on the device")


class DeviceListQuery(PageQuery):
    user_id: Id


class DeviceMe(Out):
    device_id: str
    user_id: str
    account_id: str
