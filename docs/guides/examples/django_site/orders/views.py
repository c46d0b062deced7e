"""The views: placing an order enqueues its preparation; two views show how it went."""

from django.db import transaction
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST
from shop.scheduler import queue

from pyscheduler import JobNotFound

from .models import Order
from .tasks import prepare_order


@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    with transaction.atomic():
        order = Order.objects.create(
            item=request.POST["item"], quantity=int(request.POST["quantity"])
        )
    # Enqueue after the commit: a worker may start the job at once, and must find the row.
    job = prepare_order.options(queue=queue()).enqueue(order.id)
    return JsonResponse({"order": order.id, "job": job.id}, status=202)


@require_GET
def order_detail(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse({"id": order.id, "status": order.status})


@require_GET
def job_status(request: HttpRequest, job_id: str) -> JsonResponse:
    try:
        info = queue().fetch_info(job_id)
    except JobNotFound:
        raise Http404("no such job") from None
    # The error text holds a traceback: log it or show it to staff, not to the client.
    return JsonResponse({"id": info.id, "status": info.status, "result": info.result})
