"""Idempotency-Key support (IETF httpapi idempotency-key draft) for the POST routes that create things."""
