"""Filter design, fixed-point coefficients, golden model and reference meter (CPython)."""
