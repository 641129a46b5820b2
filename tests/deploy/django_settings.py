"""The Django settings module of the test suite: mail through smtppool."""

SECRET_KEY = "only-for-the-smtppool-tests"
USE_TZ = True
INSTALLED_APPS: list[str] = []

EMAIL_BACKEND = "smtppool.django.EmailBackend"
EMAIL_HOST = "127.0.0.1"
EMAIL_PORT = 25  # each test points this at its own server
DEFAULT_FROM_EMAIL = "site@example.test"
SERVER_EMAIL = "server@example.test"
ADMINS = [("Admin", "admin@example.test")]
SMTPPOOL = {"local_hostname": "client.example.test", "timeout": 5}
