"""Which model is in service and how it changes: hot reload and the model inbox."""
