"""Chimeway's built-in adapters, installed as ``chimeway_adapters`` (not ``adapters``: that top-level
name belongs to an unrelated PyPI project). Each registers through the ``chimeway.adapters``
entry-point group, exactly as a third-party adapter would; chimeway itself never imports them."""
