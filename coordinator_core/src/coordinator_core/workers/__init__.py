"""Worker processes that run the whole pipeline, and the one writer that commits for them.

``[coordinator] processes = N`` (docs/scaling.md): ``pool.py`` is the coordinator's side
(admission, quota, routing, supervision), ``process.py`` one worker process as the
coordinator holds it, ``worker.py`` the worker process itself, ``remote_store.py`` its
store, ``writer.py`` the commits made for workers and other processes, ``channel.py`` the
pipe between them.
"""
