"""Dispatch (the ``/outreach`` API): an account's messages handed to its devices within its limits.

``limits``: when may the next message go out (pure math, no I/O); ``sending``: the operations
HTTP and the dispatcher actor share (waking the dispatcher, recording results, ``batch_done``,
the device's pull of its send queue); ``overview``: the reads an operator's console shows (the
account's limits and next send, batches newest first, devices and their queues). The rows are
``roost.storage.dispatch`` (settings, batches, items) and ``roost.storage.send_queue`` (the claim,
leases, the ledger, results).
"""
