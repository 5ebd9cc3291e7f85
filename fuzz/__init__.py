"""Fuzz targets for every parser of hyco's kernel and relay, and the campaign that runs them.

``fuzz.targets`` holds one target per parser (a function of bytes and the errors it may raise),
``fuzz.inputs`` the structured inputs and mutations that drive them, ``fuzz.corpus`` the seed
files, and ``python -m fuzz`` runs a campaign; see ``fuzz/README.md``.
"""
