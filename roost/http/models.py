"""Request and response models shared by the routes (pydantic; quart-schema validates and documents them).

Request bodies are strict (no "5" for 5) and refuse unknown fields, so a typo is an error
instead of a silently ignored setting. Query strings are parsed leniently, since every value
in a URL is a string.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import types
import zoneinfo
from typing import Annotated, Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from roost.errors import InvalidInput
from roost.plugins.registry import Registry
from roost.runtime.jsonlimits import strings
from roost.storage.pagination import DEFAULT_LIMIT, MAX_LIMIT

T = TypeVar("T")

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # ASCII digits only: Python's \d also takes "٣"
# Python's \s spelled out (what str.isspace() is true for), so the OpenAPI document's copy of this
# pattern means the same in a JSON Schema (ECMA-262) validator; NUL is refused anyway (Body).
_NOT_IN_EMAIL = (r"[^@\u0000\t\n\u000b\u000c\r\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
                 r"\u205f\u3000]")
_EMAIL = re.compile(rf"^{_NOT_IN_EMAIL}+@{_NOT_IN_EMAIL}+\.{_NOT_IN_EMAIL}+$")


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


def pattern(regex: str | re.Pattern[str]) -> dict[str, str]:
    """A ``pattern`` for the OpenAPI document only, where a validator of ours checks the value
    (with its own message and error code) and the schema should still say what it accepts."""
    return {"pattern": regex if isinstance(regex, str) else regex.pattern}


# Every IANA name this server's zoneinfo knows (what ``_timezone`` accepts), one shared component
# schema in the OpenAPI document rather than ~600 names inlined per field: a field's schema says
# ``{"x-shared-schema": "TimeZone"}`` and the document's provider makes that a ``$ref``.
SHARED_SCHEMA_KEY = "x-shared-schema"
def _enum_names(values: list[str]) -> list[str]:
    """A code generator's member names for ``values`` (``x-enum-varnames``), unique where its own
    would not be (``Etc/GMT+5`` and ``Etc/GMT-5``)."""
    names: list[str] = []
    for value in values:
        name = re.sub(r"-(?=\d)", "_MINUS_", re.sub(r"\+(?=\d)", "_PLUS_", value.upper()))
        name = re.sub(r"[^A-Z0-9]+", "_", name).strip("_")
        names.append(name if name not in names else f"{name}_{len(names)}")
    return names


_ZONES = sorted(zoneinfo.available_timezones())
SHARED_SCHEMAS: dict[str, Any] = {
    "TimeZone": {"title": "TimeZone", "description": "An IANA time zone name, such as 'Europe/Berlin'.",
                 "type": "string", "enum": _ZONES, "x-enum-varnames": _enum_names(_ZONES)},
}


def plugin_names(registry: Registry[Any]) -> Any:
    """``json_schema_extra`` of a plugin's name: an enum of the registry's names when the document is built."""

    def shape(schema: dict[str, Any]) -> None:
        schema["enum"] = registry.names()

    return shape


def only_nullable(*names: str) -> Any:
    """``json_schema_extra`` of a PATCH body: every field may be left out, but only ``names`` may
    be sent as null (the model's validator refuses null for the others)."""

    def shape(schema: dict[str, Any]) -> None:
        for name, prop in schema.get("properties", {}).items():
            prop.pop("default", None)  # a field left out keeps its value; it has no default
            if name in names:
                continue
            kept = [variant for variant in prop.pop("anyOf", []) if variant != {"type": "null"}]
            if len(kept) == 1:
                prop.update(kept[0])
            elif kept:
                prop["anyOf"] = kept

    return shape


TimeZone = Annotated[str, Field(max_length=64), AfterValidator(_timezone),
                     WithJsonSchema({SHARED_SCHEMA_KEY: "TimeZone"})]
LocalTime = Annotated[str, AfterValidator(_hhmm), Field(json_schema_extra=pattern(_HHMM))]
Email = Annotated[str, Field(max_length=320, json_schema_extra=pattern(_EMAIL)), AfterValidator(_email)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=64)]
Role = Literal["owner", "admin", "engineer", "member"]
Cadence = Literal["off", "daily", "weekly"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def _refuse_nul(value: Any) -> Any:
    """PostgreSQL cannot store U+0000 in text or jsonb; refuse it up front, the same on every backend."""
    if isinstance(value, dict | list) and not _may_hold_nul(value):
        return value
    if any("\x00" in text for text in strings(value)):  # a loop: a deep body cannot overflow the stack
        raise ValueError("text may not contain the NUL character (\\u0000)")
    return value


def _may_hold_nul(value: dict[Any, Any] | list[Any]) -> bool:
    """False when no string in ``value`` can hold a NUL: ``repr`` (C) writes one as the four
    characters ``\\x00``, so without them in it there is none, and the walk over every string (in
    Python, for the body and again for each of its nested models) is skipped (issue 21)."""
    try:
        return "\\x00" in repr(value)
    except RecursionError:  # deeper than the parser lets a body be: walk it instead
        return True


@functools.cache
def _int_fields(model: type[BaseModel]) -> frozenset[str]:
    """The JSON names of ``model``'s integer fields (``int``, ``Annotated[int, ...]``, either or None)."""
    names = set()
    for name, field in model.model_fields.items():
        kinds = get_args(field.annotation) if get_origin(field.annotation) in (Union, types.UnionType) \
            else (field.annotation,)
        for kind in kinds:
            while get_origin(kind) is Annotated:
                kind = get_args(kind)[0]
            if kind is int:
                names.add(field.alias or name)
    return frozenset(names)


class Body(BaseModel):
    """Base of request bodies: strict types, no unknown fields, no NUL characters.

    An integer field takes ``5.0`` as ``5``: JSON (and the OpenAPI document's ``integer``) does
    not tell them apart, and a client's JSON encoder may write either.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    refuse_nul = model_validator(mode="before")(_refuse_nul)

    @model_validator(mode="before")
    @classmethod
    def _integral_floats(cls, data: Any) -> Any:
        if isinstance(data, dict):
            floats = {name: int(data[name]) for name in _int_fields(cls)
                      if isinstance(data.get(name), float) and data[name].is_integer()}
            if floats:
                data = {**data, **floats}
        return data


class Out(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(from_attributes=True)


# Every cursor roost hands out is ids, digits and url-safe base64 (see each list's storage function).
_CURSOR = re.compile(r"^[A-Za-z0-9_.=-]{0,64}$")


def cursor_type(regex: str | re.Pattern[str]) -> Any:
    """A list's ``cursor`` parameter: the OpenAPI document gives the shape of the cursors it hands out."""
    return Annotated[str, Field(max_length=64, json_schema_extra=pattern(regex))]


class PageQuery(BaseModel):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: cursor_type(_CURSOR) | None = None  # type: ignore[valid-type]

    refuse_nul = model_validator(mode="before")(_refuse_nul)

    @field_validator("cursor")
    @classmethod
    def _cursor_shape(cls, value: str | None) -> str | None:
        # Raised as InvalidInput (pydantic lets it through) so the answer is 400 bad_cursor, as the
        # lists that parse their cursor further answer for one they did not hand out.
        if value is not None and not _CURSOR.match(value):
            raise InvalidInput("cursor is not one this endpoint handed out", code="bad_cursor")
        return value or None


class SeqPageQuery(PageQuery):
    """A list whose cursor is the last position handed out (digits)."""

    cursor: cursor_type(r"^[0-9]{0,9}$") | None = None  # type: ignore[valid-type]


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
    model_config = ConfigDict(json_schema_extra=only_nullable())

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
    model_config = ConfigDict(json_schema_extra=only_nullable("quiet_hours", "team"))

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
