"""Read models in PostgreSQL, built only from the event log."""
