"""The web dashboard and HTTP API (``jobvisor dashboard``): ``create_app(config)``."""

from supervisor.web.app import create_app

__all__ = ["create_app"]
