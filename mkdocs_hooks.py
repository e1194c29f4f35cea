"""MkDocs hooks (mkdocs.yml ``hooks:``): the dashboards' preview images are
served from ``dashboards/``, where ``dashboards/render_previews.py`` draws
them, instead of a copy under ``docs/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent
PREVIEWS = ("dashboards/preview-overview.png", "dashboards/preview-workers.png")


def on_files(files: Files, config: Any) -> Files:
    """Add the dashboards' previews at ``dashboards/`` in the site."""
    for name in PREVIEWS:
        files.append(
            File(
                name,
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files
