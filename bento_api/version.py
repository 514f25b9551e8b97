"""The one place the package version lives (the User-Agent carries it)."""

__version__ = "0.1.0"
