"""Asynchronous batch jobs: the queue in the store (queue.py) and the
workers that claim and run them (worker.py)."""
