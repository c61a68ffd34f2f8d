# bench/apps/__init__.py - the services workload 7 runs under uvicorn (not part of the keel package).
