"""Switchboard billing service."""
