"""The HTTP and WebSocket front: a QuartTrio app served by Hypercorn inside the supervisor."""
