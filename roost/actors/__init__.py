"""Long-running jobs, one module per actor; the supervisor owns and restarts them."""
