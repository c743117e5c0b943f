"""roost: one process for the background work a small product needs.

Map of the package, bottom to top (each layer only imports the ones below it; docs/architecture.md
walks through it):

- ``roost.errors``   the one exception tree; mapped to HTTP codes in ``roost.http.errors``.
- ``roost.runtime``  supervisor, the actor shape, bus and topics, clock, config, logging, health,
                     socket registry, frames, leadership, job locks, address rules.
- ``roost.storage``  one database interface (SQLite and PostgreSQL) and the one place their SQL
                     differs; migrations; one repository per concern. All SQL lives here.
- ``roost.domain``   the operations HTTP, CLI and actors share, one module per concern.
- ``roost.actors``   the long-running jobs the supervisor owns, all of one shape.
- ``roost.plugins``  connectors, classifiers, assessors, processors, mail transports.
- ``roost.http``     the Quart app: routes by area; the device WebSocket in ``roost.http.socket``.
- ``roost.cli``, ``roost.serve``  the ``roost`` command, and ``roost serve``.
"""

__version__ = "0.1.0"
