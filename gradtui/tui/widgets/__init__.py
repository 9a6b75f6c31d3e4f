"""Widgets of the dashboard. Each repaints from ``RunState`` snapshots, never from the wire."""
