"""The scan worker processes, and the one wire format between them and the daemon."""
