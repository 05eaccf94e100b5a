"""What gets sent: input specs, encodings, the fast JSON writer, image sources, the payload pool.

May import: ``bench.errors``, ``bench.argtypes``. Never TensorFlow.
"""
