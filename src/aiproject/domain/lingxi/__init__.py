"""Spec 03: the Lingxi device brain (chat, device records, action commands, bearer token)."""
