"""The daemon's CLI subcommands: ``infarctwatch run`` and ``infarctwatch status``."""
