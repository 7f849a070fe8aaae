"""ModelShip's operator: reconciles ModelDeployments and drives their rollouts."""

__version__ = "0.1.0"
