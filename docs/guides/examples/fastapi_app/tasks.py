"""The handlers the worker runs. An `async def` handler runs on the worker's event loop, many
at once (`pyscheduler worker reports --concurrency 50`), beside any sync ones."""

from __future__ import annotations

import asyncio
from typing import Any

from pyscheduler import task


@task(timeout=120, retries=2)
async def build_report(customer_id: int, month: str) -> dict[str, Any]:
    await asyncio.sleep(0.1)  # stands for the queries, the rendering and the upload
    return {"customer_id": customer_id, "month": month, "url": f"/files/{customer_id}/{month}.pdf"}
