"""surveil: the trade-surveillance appliance (headless core; never imports the console)."""

__version__ = "0.1.0"
