"""Benchmark harness for peer task queues (celery, dramatiq, arq, streaq, taskiq, saq, rq).

Run ``python -m bench.peers --help``. Stdlib only at import time.
"""
