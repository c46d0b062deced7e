"""A small Flask app whose welcome e-mails are sent by a pyscheduler worker
(docs/guides/flask.md)."""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask

from pyscheduler import Queue


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        PYSCHEDULER_URL=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
        PYSCHEDULER_QUEUE="emails",
        PYSCHEDULER_EAGER=False,  # True in unit tests: jobs run inline, no Redis needed
        MAIL_SENDER="welcome@example.com",
    )
    app.config.update(config or {})

    name = app.config["PYSCHEDULER_QUEUE"]
    if app.config["PYSCHEDULER_EAGER"]:
        app.extensions["pyscheduler"] = Queue(name, eager=True)
    else:
        # One client per app: redis-py keeps a pool of connections, shared by every request.
        connection = redis.Redis.from_url(app.config["PYSCHEDULER_URL"])
        app.extensions["pyscheduler"] = Queue(name, connection=connection)

    from . import views  # here, not at the top: views import tasks, which import this module

    app.register_blueprint(views.bp)
    return app
