"""The execution coordinator."""
