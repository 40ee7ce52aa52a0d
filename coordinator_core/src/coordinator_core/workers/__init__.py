"""Worker processes that run the whole pipeline, and the one writer that commits for them.

``[coordinator] processes = N`` (docs/scaling.md): ``pool.py`` is the coordinator's side
(admission, quota, routing, the writer, the sinks), ``worker.py`` the worker process,
``remote_store.py`` its store, ``channel.py`` the pipe between them.
"""
