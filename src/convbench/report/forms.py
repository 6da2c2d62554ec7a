"""Our form beside a published result's: the stem, resolution, epochs and augmentation each was
trained with, so the chapter's ranking never sets unlike numbers side by side unwarned.

Ours is read from what study.json records of a family's best experiment (``arch``, ``knobs``,
``input_size`` and the resolved ``recipe``); where a knob is not set, the network's default comes
from the catalogue (``convbench.networks``, torch-free). Theirs is ``native.yaml``'s ``form``
(``convbench.reference.NativeForm``), where None means the source does not say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convbench import networks
from convbench.recipe import Recipe
from convbench.reference import NativeForm

NOT_STATED = "not stated"
AUGMENTATIONS = {"none": "no augmentation", "crop_flip": "crops and flips",
                 "crop_flip_erase": "crops, flips and erasing"}


@dataclass(frozen=True)
class OurForm:
    """How one experiment was trained, in the terms a published result's form uses."""

    stem: str | None  # the ``stem`` knob's value; None: the network has no stem knob
    input_px: int
    epochs: int
    augmentation: str  # the recipe's value
    tta: str
    width: float | None  # the ``width`` knob; None: the network has none


def our_form(row: Any) -> OurForm:
    """The form of a study.json experiment row (a dict or a leaderboard row)."""
    knobs = row.get("knobs")
    knobs = knobs if isinstance(knobs, dict) else {}
    recipe = row.get("recipe")
    recipe = recipe if isinstance(recipe, dict) else {}
    try:
        defaults = networks.network(str(row["arch"])).knobs
    except networks.NetworkError:  # a project's network this process did not import: its knobs only
        defaults = {}
    default = Recipe()
    stem = knobs.get("stem", defaults.get("stem"))
    width = knobs.get("width", defaults.get("width"))
    return OurForm(stem=None if stem is None else str(stem), input_px=int(row["input_size"]),
                   epochs=int(recipe.get("epochs", default.epochs)),
                   augmentation=str(recipe.get("augmentation", default.augmentation)),
                   tta=str(recipe.get("tta", default.tta)),
                   width=None if width is None else float(width))


def stem_name(stem: str) -> str:
    return "d2l's" if stem == "d2l" else stem


def our_form_text(form: OurForm) -> str:
    """E.g. ``lowres stem, 28 px, 15 epochs, crops and flips, flip TTA``; no stem part for a
    network without a stem knob."""
    parts = [f"{stem_name(form.stem)} stem"] if form.stem is not None else []
    parts += [f"{form.input_px} px", f"{form.epochs} epochs",
              AUGMENTATIONS.get(form.augmentation, form.augmentation)]
    if form.tta != "none":
        parts.append(f"{form.tta} TTA")
    return ", ".join(parts)


def their_stem_text(form: NativeForm) -> str:
    return f"stem {NOT_STATED}" if form.stem is None else f"{form.stem} stem"


def their_px_text(form: NativeForm) -> str:
    return f"resolution {NOT_STATED}" if form.input_px is None else f"{form.input_px} px"


def their_epochs_text(form: NativeForm) -> str:
    if form.epochs is None:
        return f"epochs {NOT_STATED}"
    return ("up to " if form.epochs_up_to else "") + f"{form.epochs} epochs"


def their_augmentation_text(form: NativeForm) -> str:
    if form.augmentation is None:
        return f"augmentation {NOT_STATED}"
    return AUGMENTATIONS["none"] if form.augmentation == "none" else form.augmentation


def their_form_text(form: NativeForm) -> str:
    """E.g. ``3x3 stride-1 conv + 3x3/2 max pool stem, 32 px, up to 100 epochs, no augmentation``;
    no stem part for a network without one ("n/a")."""
    parts = [] if form.stem == "n/a" else [their_stem_text(form)]
    parts += [their_px_text(form), their_epochs_text(form), their_augmentation_text(form)]
    return ", ".join(parts)


def stem_differs(ours: OurForm, theirs: NativeForm) -> bool:
    """Whether the stems differ: compared only where our network has a stem knob and theirs has a
    stated stem; the same exactly when our knob's value builds theirs (``stem_knob``)."""
    return ours.stem is not None and theirs.stem not in (None, "n/a") and theirs.stem_knob != ours.stem


def resolution_differs(ours: OurForm, theirs: NativeForm) -> bool:
    return theirs.input_px is not None and theirs.input_px != ours.input_px


def unlike_sentence(family: str, ours: OurForm, theirs: NativeForm) -> str | None:
    """One sentence naming how the stems or resolutions differ, or None when neither does."""
    stem, px = stem_differs(ours, theirs), resolution_differs(ours, theirs)
    if not (stem or px):
        return None
    our_stem = f"uses {'' if ours.stem == 'd2l' else 'the '}{stem_name(str(ours.stem))} stem"
    if stem and px:
        text = f"ours {our_stem} at {ours.input_px} px, theirs a {theirs.stem} stem at {theirs.input_px} px"
    elif stem:
        text = f"ours {our_stem}, theirs a {theirs.stem} stem (both at {ours.input_px} px)"
    else:
        same = " (the same stem)" if ours.stem is not None and theirs.stem not in (None, "n/a") else ""
        text = f"ours is at {ours.input_px} px, theirs at {theirs.input_px} px{same}"
    return f"{family}: {text}: not like with like."


def differences(ours: OurForm, theirs: NativeForm) -> list[str]:
    """How the forms differ, each as "what (ours against theirs)": stem, resolution, epochs and
    augmentation where theirs is stated, and our width when below 1 (channels divided)."""
    found = []
    if stem_differs(ours, theirs):
        found.append(f"stem ({stem_name(str(ours.stem))} against {theirs.stem})")
    if resolution_differs(ours, theirs):
        found.append(f"resolution ({ours.input_px} against {theirs.input_px} px)")
    if theirs.epochs is not None and ours.epochs != theirs.epochs:
        found.append(f"epochs ({ours.epochs} against {their_epochs_text(theirs).removesuffix(' epochs')})")
    mine = AUGMENTATIONS.get(ours.augmentation, ours.augmentation)
    if theirs.augmentation is not None and mine != their_augmentation_text(theirs):
        found.append(f"augmentation ({mine} against {their_augmentation_text(theirs)})")
    if ours.width is not None and ours.width < 1:
        found.append(f"width (ours channels x {ours.width:g})")
    return found
