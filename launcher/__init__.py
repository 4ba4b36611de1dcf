"""The local launcher: the whole stack on one machine (``make run``, ``zhiku up``, tests, benchmarks).

It lives beside ``services/``, not in it: no image or pod runs it, it only starts the
services' processes the way Kubernetes would (:mod:`launcher.stack`) and restarts those that
exit (:mod:`launcher.supervision`).
"""
