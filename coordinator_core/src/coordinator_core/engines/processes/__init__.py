"""The process pool: engines run in worker processes, the pipeline stays in the parent."""
