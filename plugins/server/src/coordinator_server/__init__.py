"""coordinator-server: ``coordinator serve`` and ``coordinator keys``.

The service speaks the Open Inference Protocol v2 over REST (``/v2``) and a JSON contract API
(``/v1``); every request carries a bearer token whose key name becomes the execution's caller.
"""
