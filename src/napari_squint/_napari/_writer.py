"""npe2 writer: save the session behind squint cell layers (results included) to ``.zarr`` or ``.h5ad``."""

from __future__ import annotations

from napari_squint._napari.session import ADATA_META, SESSION_META, Session, find_session


def write_slide(path: str, layer_data: list[tuple]) -> list[str]:
    """Write the slide of the given cell layers with every result computed on it.

    ``.zarr``: the slide's elements plus the ``squint_*`` tables and shapes
    (see :mod:`napari_squint._napari.persist`); ``.h5ad``: the slide with its
    new columns. Layers that are not squint cell layers are ignored; returns
    ``[]`` when none is.
    """
    from napari_squint._napari.persist import save_results

    for _data, meta, _kind in layer_data:
        md = meta.get("metadata") or {}
        if ADATA_META not in md:
            continue
        session = find_session(md.get(SESSION_META)) if md.get(SESSION_META) is not None else None
        if session is None or session.adata is not md[ADATA_META]:
            session = Session()
            session.set_slide(md[ADATA_META], source=md.get("squint_source") or {})
            # without the session that computed them, every squint* column counts as a result
            session.original_obs = [c for c in session.adata.obs.columns if not str(c).startswith("squint")]
            session.original_obsm = [k for k in session.adata.obsm.keys() if not str(k).startswith("squint")]
        return [str(save_results(session, path))]
    return []
