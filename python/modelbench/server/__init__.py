"""The HTTP server: an OpenAI-compatible API over one AsyncEngine.

    from modelbench.server import ServerSettings, create_app
    app = create_app(ServerSettings(model="path/to/model"))
"""

from modelbench.server.app import create_app
from modelbench.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
