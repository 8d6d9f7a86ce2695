"""The napari plugin: reader, writer, sample data and five dock widgets (see ``napari.yaml``).

Everything that imports napari, Qt or magicgui lives in this package; the rest
of napari_squint never imports it. One widget per module (``*_widget.py``),
sharing a plain-Python :class:`~napari_squint._napari.session.Session` per viewer.
"""
