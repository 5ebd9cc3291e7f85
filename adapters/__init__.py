"""hyco_adapters: apps behind the relay, TCP forwarding, and the ``hyco`` command."""
