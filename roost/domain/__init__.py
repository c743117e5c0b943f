"""The domain layer: the operations HTTP, the CLI, the console and the actors share.

One module per concern, named for it. A function here takes ``Services`` (or a database and the
values it needs), writes rows in transactions of its own through ``roost.storage``, and publishes
the bus wake-ups (``roost.runtime.topics``) that tell an actor to read them. Nothing here imports
``roost.actors`` or ``roost.http``; they import this.
"""
