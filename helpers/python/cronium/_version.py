"""Version of the Cronium Python helper SDK."""

__version__ = "3.0.0"
