"""The HTTP shim: the documented API on :9005, as a client of the shmd daemon.

``python -m http_shim --prefix P --channel http [--host 127.0.0.1] [--port 9005]``
is started by ``shmd serve``; ``create_app`` builds the same application for
tests and embedding.
"""

from ._app import MAX_BATCH, create_app
from ._codec import MAX_BODY
from ._errors import HttpError, http_error
from ._openapi import openapi
from ._prometheus import StatsCollector, registry_for

__all__ = [
    "MAX_BATCH",
    "MAX_BODY",
    "HttpError",
    "StatsCollector",
    "create_app",
    "http_error",
    "openapi",
    "registry_for",
]
