"""``python -m napari_squint ...`` is the ``squint`` command line (also under ``torchrun -m napari_squint``)."""

from napari_squint.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
