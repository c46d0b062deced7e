"""A small FastAPI app whose reports are built by a pyscheduler worker
(docs/guides/fastapi.md). Run it with `uvicorn fastapi_app.main:app`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

import redis.asyncio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from pydantic import BaseModel

from pyscheduler import JobFailed, JobNotFound, WaitTimeout
from pyscheduler.aio import Queue

from .tasks import build_report


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # One client for the app's life, made in the server's event loop (a redis.asyncio client
    # belongs to the loop it first runs in) and closed when the server stops.
    connection = redis.asyncio.Redis.from_url(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0"), client_name="fastapi_app"
    )
    app.state.queue = Queue("reports", connection=connection)
    try:
        yield
    finally:
        await connection.aclose()


app = FastAPI(lifespan=lifespan)


def job_queue(request: Request) -> Queue:
    queue: Queue = request.app.state.queue
    return queue


JobQueue = Annotated[Queue, Depends(job_queue)]


class ReportRequest(BaseModel):
    customer_id: int
    month: str


@app.post("/reports", status_code=202)
async def request_report(report: ReportRequest, queue: JobQueue) -> dict[str, str]:
    job = await queue.enqueue(build_report, report.customer_id, report.month)
    return {"job": job.id}


@app.get("/jobs/{job_id}")
async def job_status(
    job_id: str, queue: JobQueue, wait: Annotated[float, Query(ge=0, le=30)] = 0
) -> dict[str, Any]:
    """How the job is doing; with `wait`, once it ended or `wait` seconds passed."""
    try:
        job = await queue.fetch_job(job_id)
    except JobNotFound:
        raise HTTPException(status_code=404, detail="no such job") from None
    if wait:
        # Waiting blocks this request only: other requests go on in the meantime.
        with contextlib.suppress(JobFailed, WaitTimeout):  # the status below says which
            await job.wait(wait)
    info = await job.info()
    # The error text holds a traceback: log it or show it to staff, not to the client.
    return {"id": info.id, "status": info.status, "result": info.result}
