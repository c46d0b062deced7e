"""The handlers the worker runs. A worker imports this module by itself, outside any request,
so a handler that needs the app's config or extensions enters an app context of its own."""

from __future__ import annotations

from functools import cache

from flask import Flask, current_app

from flask_app import create_app


@cache
def worker_app() -> Flask:
    """The app, built once per worker process (from the same environment as the web app)."""
    return create_app()


def send_welcome(email: str) -> str:
    with worker_app().app_context():
        sender = current_app.config["MAIL_SENDER"]
        # A real app sends the mail here (smtplib, Flask-Mail, an e-mail API...).
        return f"welcome mail from {sender} to {email}"
