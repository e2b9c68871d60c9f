"""A small dataset with real PMTiles (written by protomaps' `pmtiles` writer), for the `cartsync check` tests:
the bundled example's .pmtiles are synthetic bytes behind a PMTiles magic and do not parse."""
from __future__ import annotations

from pathlib import Path

CATALOG = "id: demo\nassets:\n  sge: genes.pmtiles\n  factors: factors.pmtiles\n  info: info.tsv\n"


def write_pmtiles(path: Path, tiles: int) -> None:
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import Writer
    with open(path, "wb") as f:
        w = Writer(f)
        for i in range(tiles):
            w.write_tile(zxy_to_tileid(2, i % 4, i // 4), bytes([i]) * 100)
        w.finalize({"tile_type": TileType.PNG, "tile_compression": Compression.NONE, "min_zoom": 2, "max_zoom": 2,
                    "min_lon_e7": -1800000000, "min_lat_e7": -850000000, "max_lon_e7": 1800000000,
                    "max_lat_e7": 850000000, "center_zoom": 2, "center_lon_e7": 0, "center_lat_e7": 0},
                   {"name": path.stem})


def viewable_dataset(root: Path) -> Path:
    """catalog.yaml, genes.pmtiles (10 tiles), factors.pmtiles (5 tiles), info.tsv."""
    root.mkdir(parents=True)
    write_pmtiles(root / "genes.pmtiles", 10)
    write_pmtiles(root / "factors.pmtiles", 5)
    (root / "info.tsv").write_text("a\tb\n1\t2\n")
    (root / "catalog.yaml").write_text(CATALOG)
    return root
