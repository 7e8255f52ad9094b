"""Meshes and partitioning rules, multi-host start-up, and the memory plans of both."""
