"""Docker: engine access, the tensorflow/serving launcher, the offline stand-in image and its entry point.

May import: ``bench.target`` (readiness), ``bench.serving`` (the flags the stand-in accepts) and the
shared modules.
"""
