"""Runtimes that execute artifacts and sources, and the framework-free comparison."""
