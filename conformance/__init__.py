"""hyco_conformance: the shared test vectors and scenarios every hyco integration runs."""
