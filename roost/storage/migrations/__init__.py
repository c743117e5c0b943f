"""Numbered SQL migrations (see ``roost.storage.migrator``)."""
