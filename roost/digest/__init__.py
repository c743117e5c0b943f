"""Digest logic that needs no database: slot math and quiet hours (``slots``), rendering (``render``)."""
