"""ModelShip's bundled inference runtime and traffic router."""

__version__ = "0.1.0"
