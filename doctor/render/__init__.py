"""Renderers turn a report into text. They never decide anything."""
