"""Spec 04: pet recognition and vomit analysis sessions."""
