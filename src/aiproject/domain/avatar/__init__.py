"""Spec 05: digital-human sessions on one media clock (speech, interrupt, recording, reaping)."""
