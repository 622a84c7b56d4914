"""Cython kernels for the hot paths: varints, XOR chunks, postings, range functions.

Every module here is compiled by setup.py; the Python around them stays plain.
"""
