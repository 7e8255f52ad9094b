"""Meshes and logical-axis rules (sharding) and multi-host start-up (distributed)."""
