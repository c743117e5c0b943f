"""Dispatch policy that needs no I/O: rate limits, minimum gap and quiet hours (``limits``)."""
