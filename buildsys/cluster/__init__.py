"""Running stages on a Ray cluster: the second implementation of the executor seam
(:mod:`buildsys.build.executors`).

The client keeps the scheduler, keys, caches and records; a node gets one resolved action at a
time and runs it through the same local execution code as a workstation (a node-local store
as its cache, a sandbox, buildsys's scrubbed worker process under the same budgets and
confinement). Bytes move by digest through a data plane (:mod:`.plane`) and are re-hashed on
arrival at either end. Ray is imported only here, and only when a build asks for it.
"""
