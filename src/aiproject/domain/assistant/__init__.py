"""Spec 01 understanding: the service catalogue, classification, extraction, the interview."""
