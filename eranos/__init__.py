"""eranos: one model trained across independently owned GPU boxes; the `eranos` command."""

__version__ = "0.1.0"
