"""The execution pipeline and what it keeps per execution: ledger, handles, watchdog, state
locks."""
