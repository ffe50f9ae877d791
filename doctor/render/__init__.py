"""Renderers turn a report into text. They never decide anything.

This package's own module imports nothing: the CLI imports doctor/render/formats.py
before it starts the probe processes, so that import must stay cheap.
"""
