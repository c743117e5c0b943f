"""One module per console page; ``roost.http.console`` imports every module here (pkgutil)."""
