"""The HTTP server: OpenAI-compatible and task endpoints over a registry of
model versions, each with its own AsyncEngine.

    from modelbench.config import Settings
    from modelbench.server import create_app
    app = create_app(Settings(model="path/to/model"))
"""

from modelbench.config import Settings
from modelbench.server.app import create_app

__all__ = ["Settings", "create_app"]
