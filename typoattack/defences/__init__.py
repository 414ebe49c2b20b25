"""Defences against typographic attacks, applied as a sweep dimension (see `spec` for the values)."""
