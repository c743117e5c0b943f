"""structlog set-up: JSON lines when stderr is not a terminal, readable console when it is.

Context (the actor's name, a request id, a device id) is bound with
``structlog.contextvars``; trio copies context into each new task, so a value bound in an
actor's task or a request handler stays on every line that task logs.
"""

from __future__ import annotations

import logging
import sys

import structlog

get_logger = structlog.get_logger
bind = structlog.contextvars.bind_contextvars


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and route the standard library's loggers (hypercorn's) through it."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
