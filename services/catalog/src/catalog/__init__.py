"""Switchboard catalog service."""
