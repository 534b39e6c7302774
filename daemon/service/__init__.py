"""The daemon process: the service loop, dispatch to the workers, status, signals, storage."""
