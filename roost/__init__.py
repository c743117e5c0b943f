"""roost: one process for the background work a small product needs.

Map of the package, bottom to top (each layer only imports the ones below it):

- ``roost.errors``   the one exception hierarchy; mapped to HTTP codes in ``roost.http.errors``.
- ``roost.runtime``  clock, config, logging, health registry, actor base, supervisor, socket registry.
- ``roost.storage``  one database interface (SQLite and PostgreSQL backends), migrations, repositories.
- ``roost.actors``   the long-running jobs the supervisor owns (pruner, and the jobs of later issues).
- ``roost.plugins``  connectors, classifiers, processors, transports (also loadable from entry points).
- ``roost.http``     the Quart app: routes by area and the device WebSocket.
- ``roost.cli``      the ``roost`` command.
"""

__version__ = "0.1.0"
