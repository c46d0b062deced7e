"""The routes: one enqueues a job, one shows how it went."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, request

from pyscheduler import JobNotFound, Queue

from .tasks import send_welcome

bp = Blueprint("signups", __name__)


def job_queue() -> Queue:
    queue: Queue = current_app.extensions["pyscheduler"]
    return queue


@bp.post("/signups")
def sign_up() -> tuple[dict[str, Any], int]:
    email = request.get_json()["email"]
    # ... store the new user here ...
    job = job_queue().enqueue(send_welcome, email, retries=3)
    return {"job": job.id}, 202


@bp.get("/jobs/<job_id>")
def job_status(job_id: str) -> dict[str, Any]:
    try:
        info = job_queue().fetch_info(job_id)
    except JobNotFound:
        abort(404)
    # The error text holds a traceback: log it or show it to staff, not to the client.
    return {"id": info.id, "status": info.status, "result": info.result}
