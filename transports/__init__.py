"""hyco_transports: anyio, sync-socket and gevent I/O around the hyco_core kernel."""
