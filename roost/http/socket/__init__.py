"""The device WebSocket path, from the endpoint down to the TCP socket.

- ``endpoint``: ``/ws/device``, the handshake, reading and handling frames (``roost.runtime.frames``
  routes them), and the socket's lifetime in the registry (``roost.runtime.sockets``);
- ``transport``: how frames reach the wire and come back: the Hypercorn fast path (batched reads,
  one write path, direct writes to an idle socket) behind one switch, or Quart's portable one;
- ``stream``: roost's Hypercorn WebSocket stream (protocol errors fail fast, compression declined),
  in place only while roost's server runs (``roost.http.server``).
"""
