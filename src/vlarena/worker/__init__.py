"""The worker: a Celery consumer that runs jobs through the ML core under a lease."""
