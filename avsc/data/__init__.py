"""Dataset layer: a dataset is a clip manifest made by a registered recipe (``tau2021av``,
``folders``, ``csv``, a user's own); splits and cross-validation folds; validation; the TAU
Urban Audio-Visual Scenes 2021 layout, its download and the synthetic data in it. Nothing
above this layer knows TAU: labels, clip lengths and modalities travel with the manifest."""

from avsc.data.manifest import (
    DatasetError,
    Manifest,
    Problem,
    read_labels_file,
    write_manifest,
)
from avsc.data.recipes import (
    UnknownRecipe,
    get_recipe,
    guess_recipe,
    load_manifest,
    recipes,
    register_recipe,
    unregister_recipe,
)
from avsc.data.tau import (
    LABEL_TO_INDEX,
    LABELS,
    ClipName,
    TAUDataset,
    clip_id,
    evaluation_files,
    parse_clip_name,
    write_metadata,
)

__all__ = [
    "LABELS",
    "LABEL_TO_INDEX",
    "ClipName",
    "DatasetError",
    "Manifest",
    "Problem",
    "TAUDataset",
    "UnknownRecipe",
    "clip_id",
    "evaluation_files",
    "get_recipe",
    "guess_recipe",
    "load_manifest",
    "parse_clip_name",
    "read_labels_file",
    "recipes",
    "register_recipe",
    "unregister_recipe",
    "write_manifest",
    "write_metadata",
]
