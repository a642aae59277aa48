"""Filling caption and label templates, with "a"/"an" made to agree with what fills them.

A template is a ``str.format`` string over named fields. One rule beyond ``str.format``: an
article "a" or "an" written directly before a field ("a {label}", "a {top_left}") is replaced
by the article that agrees with the value, so templates read as English and are filled with
plain class names::

    fill_template("a {top_left} top left", {"top_left": "ankle boot"}) == "an ankle boot top left"
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

from vlarena.data.dataset_info import DatasetInfo
from vlarena.data.errors import DataError

_ARTICLE_AT_END = re.compile(r"\b([Aa])n? $")


def with_article(phrase: str) -> str:
    """``phrase`` after "a" or "an", chosen by its first letter: "an ankle boot", "a bag"."""
    article = "an" if phrase[:1].lower() in tuple("aeiou") else "a"
    return f"{article} {phrase}"


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order of appearance."""
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as err:
        raise DataError(f"invalid template {template!r}: {err}") from err


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Fill ``template`` from ``values``, making an article before a field agree with it."""
    pieces: list[str] = []
    for literal, field, format_spec, conversion in string.Formatter().parse(template):
        if field is None:
            pieces.append(literal)
            continue
        if format_spec or conversion:
            raise DataError(f"template {template!r}: field {{{field}}} may not have a format spec")
        if field not in values:
            raise DataError(
                f"template {template!r} needs a value for {{{field}}}; given: {sorted(values)}"
            )
        value = values[field]
        article = _ARTICLE_AT_END.search(literal)
        if article:
            value = with_article(value)
            if article.group(1) == "A":
                value = value[0].upper() + value[1:]
            literal = literal[: article.start()]
        pieces.append(literal + value)
    return "".join(pieces)


def fill_caption(info: DatasetInfo, labels: Mapping[str, str]) -> str:
    """The caption ``info.caption_template`` gives for ``labels`` (slot name -> class name).

    For every fashion-grid record ``fill_caption(info, record.labels) == record.captions[0]``;
    replacing one slot's class gives the candidate captions that differ in that slot only.
    """
    if info.caption_template is None:
        raise DataError(f"dataset {info.name!r} has no caption_template in its dataset.json")
    return fill_template(info.caption_template, labels)


def fill_label(info: DatasetInfo, label: str) -> str:
    """The prompt ``info.label_template`` gives for a class: "an animals and nature emoji"."""
    return fill_template(info.label_template, {"label": label})


# Zero-shot prompts in wordings that no built-in dataset's captions use (a test holds them to
# that), so a model is not scored on the very template it was trained to produce: one set
# for a class of the whole image, one for the class in one slot of a grid ({position} is the
# slot's phrase, "top left"). The class ends every prompt, so a class's candidates share
# everything before it (a token model scores them over one shared prefix).
HELDOUT_LABEL_TEMPLATES = (
    "a photo of a {label}",
    "an image showing a {label}",
    "this picture contains a {label}",
)
HELDOUT_SLOT_TEMPLATES = (
    "in the {position} of this photo is a {label}",
    "the {position} of the image shows a {label}",
    "the {position} holds a {label}",
)


def heldout_prompts(info: DatasetInfo, label: str, slot: str | None = None) -> list[str]:
    """The class's prompt in each held-out template: of the image, or of `slot` in a grid."""
    if slot is None:
        return [fill_template(t, {"label": label}) for t in HELDOUT_LABEL_TEMPLATES]
    position = info.slot_phrases.get(slot, slot.replace("_", " "))
    return [
        fill_template(t, {"label": label, "position": position}) for t in HELDOUT_SLOT_TEMPLATES
    ]
