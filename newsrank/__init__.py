"""newsrank: neural user models for news and next-item recommendation."""

__version__ = "0.1.0"
