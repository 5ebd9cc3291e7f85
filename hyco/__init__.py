"""``python -m hyco`` runs the ``hyco`` command, for an environment whose scripts are not on
``PATH``. Everything else lives in the ``hyco_*`` packages."""
