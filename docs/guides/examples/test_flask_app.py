"""Tests of the Flask example on an eager queue: no Redis, no worker (docs/testing.md).
Run them with `pytest test_flask_app.py` in this directory."""

from __future__ import annotations

from flask_app import create_app

from pyscheduler.client.eager import jobs_of


def test_signing_up_sends_the_welcome_mail() -> None:
    app = create_app({"PYSCHEDULER_EAGER": True})

    response = app.test_client().post("/signups", json={"email": "ada@example.com"})

    assert response.status_code == 202
    [job] = jobs_of(app.extensions["pyscheduler"])
    assert job.id == response.json["job"]
    assert job.result == "welcome mail from welcome@example.com to ada@example.com"
