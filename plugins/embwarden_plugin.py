"""embwarden in the Airflow UI: the ledger's pages and JSON API, mounted in the API server at /embwarden.

The app lives in the installed package (monitors.web.app): Airflow imports every .py file under the
plugins folder as a top-level module, so a package here would be imported file by file. Every Airflow
process imports this module, so it stays light: the app (FastAPI, Jinja2, SQLAlchemy, Airflow's API
server code; never torch) is imported on the first request. Every route authenticates with Airflow's
own `get_user`; see monitors/web/auth.py.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class EmbwardenApp:
    """An ASGI app that loads monitors.web.app on first use and hands every request to it."""

    _app = None

    async def __call__(self, scope, receive, send):
        if EmbwardenApp._app is None:
            from monitors.web.app import app

            EmbwardenApp._app = app
        await EmbwardenApp._app(scope, receive, send)


class EmbwardenPlugin(AirflowPlugin):
    name = "embwarden"
    fastapi_apps = [{"app": EmbwardenApp(), "url_prefix": "/embwarden", "name": "embwarden"}]
    external_views = [
        {"name": "Privacy audits", "href": "/embwarden/", "destination": "nav", "category": "browse",
         "url_route": "embwarden"},
    ]
