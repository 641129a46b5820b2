"""The Django settings module of the test suite: mail through smtppool."""

import django

SECRET_KEY = "only-for-the-smtppool-tests"
USE_TZ = True
INSTALLED_APPS: list[str] = []

EMAIL_BACKEND = "smtppool.django.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = 25  # each test points this at its own server
DEFAULT_FROM_EMAIL = "site@example.test"
SERVER_EMAIL = "server@example.test"
# Django 6 takes plain addresses here and deprecates the (name, address) pairs
# that Django 5.2 needs.
if django.VERSION >= (6,):
    ADMINS = ["admin@example.test"]
    MANAGERS = ["manager@example.test"]
else:
    ADMINS = [("Admin", "admin@example.test")]
    MANAGERS = [("Manager", "manager@example.test")]
SMTPPOOL = {"local_hostname": "client.example.test", "timeout": 5}
