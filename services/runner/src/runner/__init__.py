"""Switchboard runner service."""
