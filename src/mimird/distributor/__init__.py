"""Distributor: decoding, validating and limiting pushed samples before they reach the ingester."""
