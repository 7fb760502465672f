"""Spec 01, the government-service assistant: tool sockets (3304) and the flow (444, 10925)."""
