"""Talking to a server that speaks tensorflow/serving's API: the client, the response check, Prometheus.

May import: ``bench.errors``, ``bench.payloads`` (input specs). Never TensorFlow.
"""
