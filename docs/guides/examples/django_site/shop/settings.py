"""Settings of the example project: the smallest set Django needs, plus pyscheduler's."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-the-example")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "orders",
]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "shop.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE", BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# pyscheduler: where the queues live, and the queue the shop's jobs go to.
PYSCHEDULER_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
PYSCHEDULER_QUEUE = "orders"
PYSCHEDULER_EAGER = False  # True in test settings: jobs run inline, no Redis needed
