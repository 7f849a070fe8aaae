"""ModelShip's bundled inference runtime and traffic router."""
