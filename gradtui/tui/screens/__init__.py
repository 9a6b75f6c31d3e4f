"""Screens of the dashboard: main, help, layer detail (compare comes later)."""
