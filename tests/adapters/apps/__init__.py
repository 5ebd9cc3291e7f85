"""ASGI applications the ASGI adapter's tests serve through the local relay."""
