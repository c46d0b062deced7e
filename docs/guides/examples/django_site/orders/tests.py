"""Tests of the orders app on an eager queue: no Redis, no worker (docs/testing.md)."""

from django.test import TestCase
from shop.scheduler import queue

from pyscheduler.client.eager import jobs_of

from .models import Order


class PlaceOrderTests(TestCase):
    def test_placing_an_order_prepares_it(self) -> None:
        response = self.client.post("/orders/", {"item": "fries", "quantity": 2})

        self.assertEqual(response.status_code, 202)
        placed = response.json()
        job = next(job for job in jobs_of(queue()) if job.id == placed["job"])
        self.assertEqual(job.result, "2 x fries ready")
        self.assertEqual(Order.objects.get(pk=placed["order"]).status, "ready")
