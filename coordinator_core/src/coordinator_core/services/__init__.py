"""Integration services (SPEC.md's second layer): security, quota, audit and metrics."""
