"""The embedded tensorflow_model_server: front ends over one protocol-free predict core.

May import: ``bench.errors``, ``bench.argtypes``, ``bench.payloads`` (input specs). TensorFlow is
imported lazily, only when a SavedModel loads.
"""
