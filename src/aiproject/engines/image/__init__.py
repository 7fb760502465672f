"""image engines."""
