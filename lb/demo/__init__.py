"""The demo app served by ``lb worker`` when no ``--app`` is given."""
