"""Processors, the job board, token usage and tool calls (service token)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, model_validator
from quart import Blueprint
from quart_schema import operation_id, validate_querystring, validate_response

from roost.domain import processors as domain
from roost.domain import usage as usage_domain
from roost.errors import InvalidInput
from roost.http.admin import documented_errors
from roost.http.auth import service_auth
from roost.http.context import services
from roost.http.models import Out, PageQuery, _refuse_nul
from roost.runtime.jobs import job_board
from roost.storage import tools as tools_store
from roost.storage.pagination import DEFAULT_LIMIT, MAX_LIMIT

bp = Blueprint("processors", __name__)


class ProcessorQuery(BaseModel):
    processor: str = Field(min_length=1, max_length=100)

    refuse_nul = model_validator(mode="before")(_refuse_nul)


class RunCounts(Out):
    scanned: int
    processed: int
    skipped: int
    failed: int


class JobOut(Out):
    name: str
    interval_s: float | None = Field(description="seconds between runs; null when the job runs on `cron`")
    cron: str | None = Field(description="a cron expression (UTC unless it starts with CRON_TZ=<zone>), or null")
    grace_s: float
    running: bool
    late: bool
    runs: int
    failures: int
    last_status: str | None
    last_started_at: dt.datetime | None
    last_finished_at: dt.datetime | None
    last_duration_s: float | None
    last_error: str | None
    last_success_at: dt.datetime | None
    next_run_at: dt.datetime | None


class JobPage(Out):
    items: list[JobOut]
    next_cursor: str | None


class ProcessorOut(Out):
    name: str
    interval_s: float | None = Field(description="seconds between runs; null when the processor runs on `cron`")
    cron: str | None = Field(description="ROOST_PROCESSOR_<NAME>_CRON, or null")
    grace_s: float
    running: bool
    late: bool
    last_status: str | None
    last_success_at: dt.datetime | None
    last_error: str | None
    last_result: RunCounts | None
    files: int
    items_extracted: int


class ProcessorPage(Out):
    items: list[ProcessorOut]
    next_cursor: str | None


def _day(value: str) -> str:
    dt.date.fromisoformat(value)  # ValueError for 2025-13-01
    return value


# A string, not dt.date: pydantic would also take "0" (the epoch) for a date, which the spec does not allow.
Day = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="a UTC day, YYYY-MM-DD",
                           json_schema_extra={"format": "date"}),
                AfterValidator(_day)]


class UsageQuery(PageQuery):
    user: str | None = Field(None, min_length=1, max_length=200)
    from_: Day | None = Field(None, alias="from")
    to: Day | None = None

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def _range(self) -> UsageQuery:
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError("from is after to")
        return self


class ToolsQuery(BaseModel):
    """The tool counts' filters. Its cursor is longer than other lists' (it carries a user and a tool name)."""

    user: str | None = Field(None, min_length=1, max_length=200, description="a transcript folder's user name")
    from_: Day | None = Field(None, alias="from")
    to: Day | None = None
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(None, min_length=1, max_length=1200, pattern=r"^[A-Za-z0-9_-]+$",
                               description="next_cursor of the previous page")

    model_config = {"populate_by_name": True}

    refuse_nul = model_validator(mode="before")(_refuse_nul)

    @model_validator(mode="after")
    def _range(self) -> ToolsQuery:
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError("from is after to")
        return self


class ToolRow(Out):
    user: str
    day: str = Field(description="UTC day of the calls, YYYY-MM-DD")
    tool: str
    calls: int = Field(description="tool calls (tool_use blocks), each once")
    failed: int = Field(description="of those calls, how many got a tool_result with is_error: true")


class ToolPage(Out):
    items: list[ToolRow]
    next_cursor: str | None


class UsageRow(Out):
    user: str
    day: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class UsagePage(Out):
    items: list[UsageRow]
    next_cursor: str | None


# The handlers' names are the OpenAPI operationIds (post_run_session_processor, ...): they keep the
# words of their public paths.


@bp.post("/api/admin/run-session-processor")
@service_auth
@validate_querystring(ProcessorQuery)
@validate_response(RunCounts)
@documented_errors(400, 401, 404, 409, 503)
async def run_session_processor(query_args: ProcessorQuery) -> dict[str, int]:
    """Run a processor now; 409 while a scheduled or manual run of it is going on (in any process).

    The run is recorded in the audit log (action ``processor.run``) under the service token's name.
    """
    s = services()
    processor = domain.get_processor(s, query_args.processor)
    return (await domain.run_now(s, processor, actor="service")).counts()


@bp.get("/api/admin/session-processors")
@service_auth
@validate_response(ProcessorPage)
@documented_errors(401, 503)
async def list_session_processors() -> dict[str, Any]:
    """List the session processors and the state of each."""
    return {"items": await domain.statuses(services()), "next_cursor": None}


@bp.get("/api/admin/jobs")
@service_auth
@validate_response(JobPage)
@documented_errors(401, 503)
async def list_jobs() -> dict[str, Any]:
    """Every scheduled job of this process: last status, duration, error, next run."""
    return {"items": job_board(services()).snapshot(), "next_cursor": None}


@bp.get("/api/v1/usage")
@operation_id("listUsage")
@service_auth
@validate_querystring(UsageQuery)
@validate_response(UsagePage)
@documented_errors(400, 401, 503)
async def usage(query_args: UsageQuery) -> dict[str, Any]:
    """Token totals per user, UTC day and model (``from``/``to`` are inclusive days, YYYY-MM-DD)."""
    return await usage_domain.totals(services(), user=query_args.user, day_from=_date(query_args.from_),
                                     day_to=_date(query_args.to), limit=query_args.limit, cursor=query_args.cursor)


@bp.get("/api/v1/tools")
@operation_id("listToolCalls")
@service_auth
@validate_querystring(ToolsQuery)
@validate_response(ToolPage)
@documented_errors(400, 401, 503)
async def tools(query_args: ToolsQuery) -> dict[str, Any]:
    """Tool calls and failed calls per user, UTC day and tool.

    ``from``/``to`` are inclusive days, YYYY-MM-DD."""
    return await _totals(tools_store, query_args)


async def _totals(store: Any, query_args: Any) -> dict[str, Any]:
    """One page of a processor's totals (``store``: its storage module) for the query's user and days."""
    if query_args.cursor is not None:
        store.decode_cursor(query_args.cursor)  # a bad cursor is a 400, before touching the database
    try:
        return await store.totals(services().db, user=query_args.user, day_from=_date(query_args.from_),
                                  day_to=_date(query_args.to), limit=query_args.limit, cursor=query_args.cursor)
    except OverflowError as exc:
        raise InvalidInput(str(exc)) from exc


def _date(value: str | None) -> dt.date | None:
    return dt.date.fromisoformat(value) if value is not None else None
