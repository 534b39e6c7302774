"""Noticing complete files in the incoming folder and claiming them."""
