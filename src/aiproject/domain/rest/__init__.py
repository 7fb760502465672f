"""Spec 02: accounts, tokens, quotas and the metered models behind the REST surface."""
