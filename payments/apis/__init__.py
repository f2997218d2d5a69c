"""Payments API views, by caller."""
