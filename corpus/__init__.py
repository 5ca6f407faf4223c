"""The corpus room: the manifest that goes in (``manifest``), the rows that come out (``schema``), how
they are stored (``store``), their statistics (``stats``) and the dataset card (``card``)."""
