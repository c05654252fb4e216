"""Every ``modelbench ...`` command; ``modelbench.cli.main:main`` is the entry point."""
