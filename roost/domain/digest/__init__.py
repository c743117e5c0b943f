"""Digests, notifications and their mail: the operations the digest actor, HTTP and the CLI share.

* ``tick``: one digest tick (release held mail, decay watches, assemble what is due), run by the
  digest actor on its cadence and by ``POST /api/admin/digest/run``;
* ``assemble``: the tick's third step, every due digest batch by batch (one transaction each);
* ``notify``: create a notification, and queue its own mail when it asks for one;
* ``unsubscribe``: signed one-click unsubscribe links (their key may live in the database);
* ``render`` and ``slots``: pure code, no database: templates, and the slot and quiet-hours math.
"""
