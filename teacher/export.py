"""Export a data set's split through a teacher into sharded, verified, resumable distillation records.

The glue behind `export_teacher.py`: list the samples (`datasets.sources`), plan and write the shards
(`datasets.shards`), and run the teacher over the samples (`teacher.labelling`). See `datasets.shards` for the
files an export writes and how a rerun resumes, and `teacher.labelling` for how each kind of teacher is run.
"""

import concurrent.futures
import os
import sys

from datasets import nusvip, shards, sources
from datasets.folders import IMAGE_EXTENSIONS
from datasets.salicon import list_salicon
from datasets.shards import (  # noqa: F401 (the export's public names)
    DEFAULT_SHARD_SIZE_MB, KILL_AFTER_SHARDS_ENV, KILL_EXIT_CODE, file_sha256, manifest_path, verify_split,
)
from teacher import labelling
from teacher.labelling import contract_teacher_map, load_inputs, resolve_teacher  # noqa: F401

DEFAULT_DATA_DIR = os.path.join("data", "salicon")
DEFAULT_TEACHER = os.path.join("weights", "model_salicon_cpu.pb")
DEFAULT_OUT_DIR = os.path.join("data", "distill")
DEFAULT_BATCH_SIZE = 8
ALL_SPLITS = ("train", "val")  # what `split="all"` exports: the splits with maps (test has none)
MAX_LISTED_BAD_FILES = 20  # an error lists this many bad input files, then counts the rest

DATA_HINT = (
    "Get SALICON (2017 / LSUN'17 release: images, maps and fixations) from http://salicon.net/challenge-2017/ and "
    "unpack it as <data-dir>/images/{train,val}, maps/{train,val}, fixations/{train,val}; or run MSI-Net's "
    "download script (github.com/alexanderkroner/saliency, download.py download_salicon), which makes "
    "data/salicon/stimuli, saliency, fixations. Pass the folder with --data-dir (default data/salicon)."
)


def _list_samples(data_dir, split, dataset="salicon", split_file=None, sigma=nusvip.DEFAULT_SIGMA_PX):
    """The samples of `split` of `dataset` (`datasets.sources.list_samples`; SALICON errors say how to get it)."""
    data_dir = os.fspath(data_dir)
    if dataset == "images":
        return _list_images_folder(data_dir, split)
    if dataset != "salicon":
        return sources.list_samples(dataset, data_dir, split, split_file, sigma)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"{data_dir}: SALICON folder not found. {DATA_HINT}")
    try:
        return list_salicon(data_dir, split)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}. {DATA_HINT}") from e


def _subfolders(folder):
    return sorted(name for name in os.listdir(folder)
                  if not name.startswith(".") and os.path.isdir(os.path.join(folder, name)))


def _list_images_folder(data_dir, split):
    """The images directly in an `--images` folder; its subfolders are named on stderr (they are not read), or in
    the error when there is nothing else."""
    data_dir = os.fspath(data_dir)
    folders = _subfolders(data_dir) if os.path.isdir(data_dir) else []
    try:
        samples = sources.list_samples("images", data_dir, split)
    except FileNotFoundError as e:
        if folders:
            raise FileNotFoundError(
                f"{data_dir}: no images directly in this folder, only subfolders ({', '.join(folders)}); --images "
                "does not read subfolders: pass one of them as --images (each with its own --out)") from e
        raise
    if folders:
        print(f"export: --images reads only the images directly in {data_dir}: {len(folders)} subfolder(s) ignored: "
              f"{', '.join(folders)} (export each with its own --images and --out, or move their images up)",
              file=sys.stderr)
    return samples


def _report_other_files(samples):
    """Name the files beside the images that the listing skipped (other types, e.g. .tif or .webp)."""
    folders = sorted({os.path.dirname(sample.image_path) for sample in samples})
    # Images of a known type that the listing left out belong to other splits; only other file types are news.
    others = [os.path.join(folder, name) for folder in folders for name in sorted(os.listdir(folder))
              if not name.startswith(".") and os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS
              and os.path.isfile(os.path.join(folder, name))]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        print(f"export: skipped {len(others)} file(s) that are not images of a known type (.jpg/.jpeg/.png): {shown}",
              file=sys.stderr)
    return others


def export_split(
    data_dir,
    split,
    teacher,
    out_dir,
    batch_size=DEFAULT_BATCH_SIZE,
    shard_size_mb=DEFAULT_SHARD_SIZE_MB,
    images_per_shard=None,
    skip_bad=False,
    verify=False,
    progress=True,
    pipeline="repo",
    input_size=None,
    dataset="salicon",
    split_file=None,
    sigma=nusvip.DEFAULT_SIGMA_PX,
    teacher_format="auto",
    teacher_max_side=None,
):
    """Export one split (or "all") to sharded distillation records with a manifest.

    Resumable: rerun with the same arguments after an interruption and finished shards are kept (see the
    module docstring). A rerun over a complete export only re-checks the shards and rewrites the manifest.

    Args:
        data_dir: the SALICON folder (2017 release or MSI-Net download layout; synthetic data has the former).
        split: "train", "val", "test" or "all" ("train" and "val").
        teacher: a teacher object, "oracle", or the path of MSI-Net weights (`teacher.loading.load_teacher`).
        out_dir: output folder, created if needed.
        batch_size: images per teacher call. Defaults to 8.
        shard_size_mb: target shard size in MB (10^6 bytes), used for a new plan. Defaults to 150.
        images_per_shard: images per shard for a new plan, overriding `shard_size_mb`.
        skip_bad: skip unreadable or inconsistent images (listed in the manifest) instead of stopping.
        verify: reread every shard at the end (`verify_split`).
        progress: show a progress bar (images/s and ETA).
        pipeline: the teacher's preprocessing, "repo" (the author's TF1 pipeline, default) or "hub".
        input_size: (H, W) overriding the teacher's input size (e.g. small sizes in tests).
        dataset: the data set in `data_dir`, one of `datasets.sources.DATASETS` ("salicon" by default; "images"
            is a folder of images without human data, exported with the teacher maps only, whatever `split`).
        split_file: a split JSON overriding the data set's stored split (`datasets/splits/<name>.json`).
        sigma: Gaussian sigma in pixels for human maps built from fixation points (OSIE and other NUS-VIP
            sets without `maps/`; `datasets.nusvip`).
        teacher_format: how a teacher path loads: "auto" (default), "msinet" or "contract".
        teacher_max_side: a contract teacher's largest input side (None: each image at its own size).

    Returns:
        The manifest dict (for "all": {split: manifest}; SALICON's "all" is train and val, the other data
        sets' train, val and test).

    Raises:
        FileNotFoundError: missing data folder or teacher file (the message says what to download).
        ValueError: an unreadable or inconsistent image (naming the file) without `skip_bad`; a plan in
            `out_dir` made from other data or another teacher; records in `out_dir` that another export wrote
            (they are never deleted); a failed verification.
    """
    if split == "all":
        return _export_all(data_dir, teacher, out_dir, batch_size, shard_size_mb, images_per_shard, skip_bad, verify,
                           progress, pipeline, input_size, dataset, split_file, sigma, teacher_format,
                           teacher_max_side)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    samples = _list_samples(data_dir, split, dataset, split_file, sigma)
    _report_other_files(samples)
    teacher = _resolve_teacher(teacher, data_dir, input_size, pipeline, teacher_format, teacher_max_side)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    description = labelling.teacher_description(teacher, pipeline)
    name = sources.dataset_name(dataset, data_dir)
    source = {"data_dir": os.path.abspath(os.fspath(data_dir)), "dataset": name,
              "human_maps": samples[0].human_map_origin if samples else None}
    plan, finished = shards.load_or_make_plan(out_dir, split, samples, description, shard_size_mb, images_per_shard,
                                              source)
    shards.remove_stale_files(out_dir, split, plan, finished)
    writer = _write_shards(samples, plan, finished, teacher, out_dir, split, name, batch_size, skip_bad, progress,
                           pipeline)
    return _write_manifest(data_dir, out_dir, split, plan, writer, description, pipeline, name, samples, verify)


def _export_all(data_dir, teacher, out_dir, batch_size, shard_size_mb, images_per_shard, skip_bad, verify, progress,
                pipeline, input_size, dataset, split_file, sigma, teacher_format, teacher_max_side):
    """`export_split(split="all")`: each split of the data set in turn, with the teacher loaded once."""
    teacher = labelling.resolve_teacher(teacher, data_dir, input_size, pipeline, teacher_format, teacher_max_side)
    return {
        name: export_split(data_dir, name, teacher, out_dir, batch_size, shard_size_mb, images_per_shard,
                           skip_bad, verify, progress, pipeline, dataset=dataset, split_file=split_file,
                           sigma=sigma)
        for name in (ALL_SPLITS if dataset == "salicon" else sources.split_names(dataset))
    }


def _resolve_teacher(teacher, data_dir, input_size, pipeline, teacher_format, teacher_max_side):
    """The teacher object (`labelling.resolve_teacher`), refused when it was made for another pipeline."""
    teacher = labelling.resolve_teacher(teacher, data_dir, input_size, pipeline, teacher_format, teacher_max_side)
    if getattr(teacher, "pipeline", pipeline) != pipeline:
        raise ValueError(
            f"the teacher was made for the {teacher.pipeline!r} preprocessing pipeline, the export uses {pipeline!r}"
        )
    return teacher


def _write_shards(samples, plan, finished, teacher, out_dir, split, name, batch_size, skip_bad, progress, pipeline):
    """Label the stems of the plan's unfinished shards and write those shards; returns the `shards.ShardWriter`.

    A bad input file stops the export (without `skip_bad`); the error then lists every bad file of the rest of
    the split (`_bad_files_error`), not only the first.
    """
    by_stem = {sample.stem: sample for sample in samples}
    todo = [by_stem[stem] for shard in plan["shards"] if shard["name"] not in finished for stem in shard["stems"]]
    writer = shards.ShardWriter(out_dir, split, plan, finished, shards.kill_after_from_env(), dataset=name)
    if todo:
        try:
            labelling.label_stream(todo, teacher, writer, batch_size, skip_bad, progress, pipeline, plan)
        except ValueError as e:
            every = None if skip_bad else _bad_files_error(todo[writer.handled:], progress)
            if every is not None:
                raise every from e
            raise
    return writer


def _write_manifest(data_dir, out_dir, split, plan, writer, description, pipeline, name, samples, verify):
    """Write the split's manifest (the last file of an export), drop its progress file, verify if asked."""
    manifest = shards.build_manifest(data_dir, split, plan, writer.progress, description,
                                     labelling.preprocessing_entry(description, pipeline))
    manifest.update(_human_data(name, samples, manifest))
    shards.write_json(shards.manifest_path(out_dir, split), manifest)
    if os.path.exists(shards.progress_path(out_dir, split)):
        os.remove(shards.progress_path(out_dir, split))
    if verify:
        shards.verify_split(out_dir, split)
    return manifest


def _input_problem(sample):
    """Why the export cannot read `sample` (`labelling.load_inputs`'s error), or None."""
    try:
        labelling.load_inputs(sample)
    except (ValueError, OSError) as e:
        return str(e)
    return None


def _bad_files_error(rest, progress):
    """One error listing every bad input file, when the export stopped at the bad file `rest[0]` and `rest[1:]`
    hold more; None when `rest[0]` reads (the export stopped for another reason) or no other file is bad (the
    export's own error says it all)."""
    if not rest or _input_problem(rest[0]) is None:
        return None
    if progress and len(rest) > 1:
        print(f"export: stopped at a bad file; checking the other {len(rest) - 1} image(s) of the split for more",
              file=sys.stderr, flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        problems = [p for p in pool.map(_input_problem, rest) if p is not None]
    if len(problems) < 2:
        return None
    listed = "; ".join(problems[:MAX_LISTED_BAD_FILES])
    more = f"; and {len(problems) - MAX_LISTED_BAD_FILES} more" if len(problems) > MAX_LISTED_BAD_FILES else ""
    return ValueError(
        f"{len(problems)} bad input files: {listed}{more}. Finished shards are kept: fix the files, or remove them "
        "(with their map and fixation files), then run the same command again to resume; or pass --skip-bad "
        "(skip_bad=True) to skip such files"
    )


def _human_data(name, samples, manifest):
    """The manifest's data set entries: name, images with and without a human map, where the maps come from."""
    with_map = sum(entry.get("with_human_map", 0) for entry in manifest["shards"])
    eye = [sample for sample in samples if sample.points_in_memory]
    maps = samples[0].human_map_origin if samples and (with_map or eye) else "none"
    return {
        "dataset": name,
        "num_with_human_map": with_map,
        "num_without_human_map": manifest["num_images"] - with_map,
        "human_maps": maps,
        "fixations": {"images_with_observers": len(eye), "points": int(sum(len(s.fixations) for s in eye)),
                      "clamped_points": int(sum(s.num_outside for s in eye))},
    }
