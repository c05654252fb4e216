"""modelbench: serve language models on your own hardware and measure them honestly."""

# In a development build the compiled module sits in <build>/python/modelbench;
# extend_path lets that directory, put on sys.path, complete this package.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

import torch as _torch  # noqa: E402,F401  (loads libtorch before the extension)

from modelbench import _core  # noqa: E402

__version__ = "0.1.0"

__all__ = ["_core", "__version__"]
