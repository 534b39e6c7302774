"""What the trainer and deploy import too: decoding, preprocessing, the bundle and its signature.

Imports nothing of the daemon but `daemon.errors` (checked by the import contract in
pyproject.toml).
"""
