"""mlfleet agent: everything that runs on a host. Standard library only, Python 3.8+."""

__version__ = "0.1.0"
