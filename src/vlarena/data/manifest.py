"""JSONL dataset manifests: records, the dataset.json sidecar, validation, loading and writing."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from vlarena.data.dataset_info import DatasetInfo
from vlarena.data.errors import DataError, ImageError, ManifestError
from vlarena.data.images import download_image, is_url, load_images
from vlarena.data.templates import template_fields
from vlarena.files import atomic_write_text
from vlarena.jobs.confinement import Confinement, ConfinementError

MANIFEST_NAME = "manifest.jsonl"
SIDECAR_NAME = "dataset.json"
SPLITS = ("train", "val", "test")

RECORD_FIELDS = (
    "id",
    "image",
    "captions",
    "caption",
    "query",
    "answer",
    "choices",
    "questions",
    "label",
    "labels",
    "split",
)
QUESTION_FIELDS = ("query", "answer", "choices")
SIDECAR_FIELDS = (
    "name",
    "description",
    "license",
    "attribution",
    "label_template",
    "caption_template",
    "classes",
    "slots",
    "slot_phrases",
)
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# The spec field a confined job names its manifest by.
URI_FIELD = "dataset.uri"


@dataclass(frozen=True)
class Question:
    """One question about an image; ``choices`` (when given) holds the answer."""

    query: str
    answer: str
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Record:
    """One validated manifest line. ``image`` is an absolute path or an http(s) URL."""

    id: str
    image: str
    captions: tuple[str, ...] = ()
    questions: tuple[Question, ...] = ()
    label: str | None = None
    labels: dict[str, str] | None = None
    split: str | None = None
    line: int = 0


def hashed_split(record_id: str) -> str:
    """The split of a record whose manifest gives none: 80% train, 10% val, 10% test by id."""
    bucket = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "big") % 10
    return "train" if bucket < 8 else "val" if bucket == 8 else "test"


def record_split(record: Record) -> str:
    """The split a record belongs to: its own ``split``, else the one hashed from its id."""
    return record.split if record.split is not None else hashed_split(record.id)


@dataclass
class Dataset:
    """A loaded manifest: its records (in file order) and its dataset.json."""

    info: DatasetInfo
    records: list[Record]
    manifest_path: Path
    content_digest: str
    split_name: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def split(self, name: str) -> Dataset:
        """The records of one split ("train", "val" or "test"), in file order."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        chosen = [record for record in self.records if record_split(record) == name]
        return dataclasses.replace(self, records=chosen, split_name=name)

    def captions(self) -> list[str]:
        """The first caption of every record."""
        captions = []
        for record in self.records:
            if not record.captions:
                raise DataError(f"{self.manifest_path} line {record.line}: record has no caption")
            captions.append(record.captions[0])
        return captions

    def labels(self) -> list[str]:
        """The ``label`` of every record."""
        labels = []
        for record in self.records:
            if record.label is None:
                raise DataError(f"{self.manifest_path} line {record.line}: record has no label")
            labels.append(record.label)
        return labels

    def fingerprint(self) -> str:
        """A stable key for caches: the manifest and dataset.json contents, and the split.

        Images are not hashed (that would read every file); replace an image under a new name,
        or edit the manifest, when its pixels change.
        """
        key = f"{self.content_digest}:{self.split_name or 'all'}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def load_images(self, size: int) -> np.ndarray:
        """All images as one (N, 3, size, size) float32 array in [-1, 1]."""
        try:
            return load_images([record.image for record in self.records], size)
        except ImageError as err:
            line = next(record.line for record in self.records if record.image == err.image)
            raise ImageError(err.image, err.problem, self.manifest_path, line) from err


def _read(path: Path, confinement: Confinement | None, what: str) -> bytes:
    if confinement is not None:
        return confinement.read(path, URI_FIELD)
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {what}{path}: {err.strerror}") from err


def load_manifest(
    path: str | os.PathLike[str], *, confinement: Confinement | None = None
) -> Dataset:
    """Load and validate a manifest: the .jsonl file or a directory holding manifest.jsonl.

    Under a job's `confinement` (jobs submitted through the gateway), the manifest, its
    dataset.json and every local image must be regular files under its roots, the manifest
    within its size limit, and image URLs are refused, or fetched now under its limits when
    it allows them (the records then name the local copies).
    """
    manifest_path = Path(path)
    if confinement is not None:
        manifest_path = confinement.path(path, URI_FIELD, "file-or-dir", must_exist=True)
    if manifest_path.is_dir():
        manifest_path = manifest_path / MANIFEST_NAME
    manifest_bytes = _read(manifest_path, confinement, "manifest ")
    sidecar_path = manifest_path.parent / SIDECAR_NAME
    exists = os.path.lexists if confinement is not None else os.path.exists
    sidecar_bytes = _read(sidecar_path, confinement, "") if exists(sidecar_path) else None

    records = _parse_records(manifest_path, manifest_bytes, confinement)
    info = _parse_sidecar(sidecar_path, sidecar_bytes, records, manifest_path)
    if confinement is not None and confinement.allow_image_urls:
        records = [_downloaded(record, manifest_path, confinement) for record in records]
    digest = hashlib.sha256()
    for part in (manifest_bytes, sidecar_bytes or b""):
        digest.update(len(part).to_bytes(8, "big") + part)
    return Dataset(info, records, manifest_path, digest.hexdigest())


def record_to_dict(record: Record, image: str | None = None) -> dict[str, Any]:
    """The manifest form of a record (a top-level question becomes part of ``questions``).

    ``image`` replaces the record's image reference, e.g. with a path relative to a new
    manifest.
    """
    out: dict[str, Any] = {"id": record.id, "image": image if image is not None else record.image}
    if record.captions:
        out["captions"] = list(record.captions)
    if record.questions:
        out["questions"] = [
            {"query": q.query, "answer": q.answer}
            | ({"choices": list(q.choices)} if q.choices is not None else {})
            for q in record.questions
        ]
    if record.label is not None:
        out["label"] = record.label
    if record.labels is not None:
        out["labels"] = dict(record.labels)
    if record.split is not None:
        out["split"] = record.split
    return out


def write_manifest(
    records: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write records as JSONL (and ``info`` as dataset.json beside it); returns the manifest path.

    ``path`` is the .jsonl file, or a directory to hold manifest.jsonl. Files are written
    under a temporary name and renamed, so a reader never sees half a manifest.
    """
    manifest_path = Path(path)
    if manifest_path.is_dir() or manifest_path.suffix != ".jsonl":
        manifest_path = manifest_path / MANIFEST_NAME
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(dict(record), ensure_ascii=False) + "\n" for record in records]
    atomic_write_text(manifest_path, "".join(lines))
    if info is not None:
        text = json.dumps(dict(info), ensure_ascii=False, indent=2) + "\n"
        atomic_write_text(manifest_path.parent / SIDECAR_NAME, text)
    return manifest_path


def _json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, dict):
        return "object"
    return {int: "int", float: "float", str: "string", list: "list"}[type(value)]


@dataclass(frozen=True)
class _FieldChecker:
    """Type checks that raise a ManifestError naming the file, line and field."""

    path: Path
    line: int | None

    def fail(self, field_name: str | None, problem: str) -> NoReturn:
        raise ManifestError(self.path, self.line, field_name, problem)

    def reject_unknown(self, data: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f'did you mean "{close[0]}"? ' if close else ""
                self.fail(prefix + key, f"unknown field ({hint}known fields: {', '.join(known)})")

    def text(self, field_name: str, value: object) -> str:
        if not isinstance(value, str):
            self.fail(field_name, f"expected a string, got {_json_type(value)}")
        if not value.strip():
            self.fail(field_name, "expected a non-empty string")
        return value

    def text_list(self, field_name: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            found = _json_type(value)
            if isinstance(value, list):
                found = "a list holding " + next(
                    _json_type(item) for item in value if not isinstance(item, str)
                )
            self.fail(field_name, f"expected a list of strings, got {found}")
        if not value:
            self.fail(field_name, "expected a non-empty list of strings, got an empty list")
        for index, item in enumerate(value):
            if not item.strip():
                self.fail(f"{field_name}[{index}]", "expected a non-empty string")
        return tuple(value)

    def json_object(self, field_name: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(field_name, f"expected an object, got {_json_type(value)}")
        return value


def _downloaded(record: Record, manifest_path: Path, confinement: Confinement) -> Record:
    """The record naming its image's local copy, fetched under the confinement's limits."""
    if not is_url(record.image):
        return record
    try:
        local = download_image(record.image, confinement)
    except ImageError as err:
        raise ImageError(record.image, err.problem, manifest_path, record.line) from err
    return dataclasses.replace(record, image=str(local))


def _parse_records(
    manifest_path: Path, manifest_bytes: bytes, confinement: Confinement | None
) -> list[Record]:
    try:
        text = manifest_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ManifestError(manifest_path, None, None, f"not UTF-8 text: {err}") from err
    manifest_dir = manifest_path.resolve().parent
    records: list[Record] = []
    first_line_of_id: dict[str, int] = {}
    # Split on "\n" only: str.splitlines would also split inside JSON strings at U+2028.
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(
                manifest_path, line_number, None, f"invalid JSON: {err.msg} (column {err.colno})"
            ) from err
        check = _FieldChecker(manifest_path, line_number)
        record = _parse_record(data, check, manifest_dir, confinement)
        if record.id in first_line_of_id:
            raise ManifestError(
                manifest_path,
                line_number,
                "id",
                f"duplicate id {record.id!r} (first used on line {first_line_of_id[record.id]})",
            )
        first_line_of_id[record.id] = line_number
        records.append(record)
    if not records:
        raise ManifestError(manifest_path, None, None, "the manifest has no records")
    return records


def _parse_record(
    data: object, check: _FieldChecker, manifest_dir: Path, confinement: Confinement | None
) -> Record:
    if not isinstance(data, dict):
        check.fail(None, f"expected a JSON object, got {_json_type(data)}")
    check.reject_unknown(data, RECORD_FIELDS, prefix="")
    if "image" not in data:
        check.fail("image", "missing (every record needs an image)")
    image = _resolve_image(check.text("image", data["image"]), check, manifest_dir)
    if confinement is not None:
        image = _confined_image(image, check, confinement)

    if "caption" in data and "captions" in data:
        check.fail("caption", 'give either "caption" or "captions", not both')
    captions: tuple[str, ...] = ()
    if "captions" in data:
        captions = check.text_list("captions", data["captions"])
    elif "caption" in data:
        captions = (check.text("caption", data["caption"]),)

    questions = _parse_questions(data, check)
    label = check.text("label", data["label"]) if "label" in data else None
    labels = None
    if "labels" in data:
        labels = check.json_object("labels", data["labels"])
        if not labels:
            check.fail("labels", "expected at least one slot, got an empty object")
        for slot, value in labels.items():
            check.text(f"labels.{slot}", value)
    split = None
    if "split" in data:
        split = check.text("split", data["split"])
        if split not in SPLITS:
            check.fail("split", f"expected one of {', '.join(SPLITS)}, got {split!r}")
    record_id = str(check.line)
    if "id" in data:
        raw_id = data["id"]
        # Integer ids (COCO's) are accepted as their decimal string.
        record_id = str(raw_id) if type(raw_id) is int else check.text("id", raw_id)

    if not is_url(image):
        if not os.path.isfile(image):
            raise ImageError(image, "file not found", check.path, check.line)
        if not os.access(image, os.R_OK):
            raise ImageError(image, "file not readable", check.path, check.line)
    return Record(record_id, image, captions, questions, label, labels, split, check.line or 0)


def _confined_image(image: str, check: _FieldChecker, confinement: Confinement) -> str:
    """A local image resolved and checked to be a regular file under the roots (before
    anything tells whether it exists), or a URL while URLs are allowed."""
    try:
        if is_url(image):
            confinement.image_url(image)
            return image
        return str(confinement.path(image, "image", "file", must_exist=True))
    except ConfinementError as err:
        check.fail("image", err.problem)


def _parse_questions(data: dict[str, Any], check: _FieldChecker) -> tuple[Question, ...]:
    questions: list[Question] = []
    if "query" in data:
        if "answer" not in data:
            check.fail("answer", 'missing: a "query" needs an "answer"')
        questions.append(_parse_question(data, check, prefix=""))
    else:
        for orphan in ("answer", "choices"):
            if orphan in data:
                check.fail(orphan, f'"{orphan}" needs a "query"')
    if "questions" in data:
        items = data["questions"]
        if not isinstance(items, list) or not items:
            found = "an empty list" if items == [] else _json_type(items)
            check.fail("questions", f"expected a non-empty list of objects, got {found}")
        for index, item in enumerate(items):
            prefix = f"questions[{index}]."
            item = check.json_object(prefix[:-1], item)
            check.reject_unknown(item, QUESTION_FIELDS, prefix=prefix)
            for required in ("query", "answer"):
                if required not in item:
                    check.fail(prefix + required, "missing")
            questions.append(_parse_question(item, check, prefix=prefix))
    return tuple(questions)


def _parse_question(data: Mapping[str, Any], check: _FieldChecker, prefix: str) -> Question:
    query = check.text(prefix + "query", data["query"])
    answer = check.text(prefix + "answer", data["answer"])
    choices = None
    if "choices" in data:
        choices = check.text_list(prefix + "choices", data["choices"])
        if answer not in choices:
            check.fail(prefix + "choices", f"the answer {answer!r} is not among the choices")
    return Question(query, answer, choices)


def _resolve_image(reference: str, check: _FieldChecker, manifest_dir: Path) -> str:
    """An absolute local path (relative ones are relative to the manifest) or an http(s) URL."""
    if is_url(reference):
        return reference
    scheme = _URL_SCHEME.match(reference)
    if scheme and scheme.group(1).lower() != "file":
        check.fail(
            "image",
            f"unsupported URL scheme {scheme.group(1)!r}; use a path, file:// or http(s)://",
        )
    if scheme:
        parsed = urllib.parse.urlparse(reference)
        if parsed.netloc not in ("", "localhost"):
            check.fail("image", f"file:// URI on another host ({parsed.netloc}) is not supported")
        path = Path(urllib.request.url2pathname(parsed.path))
    else:
        path = Path(reference)
    return os.path.normpath(manifest_dir / path)


def _parse_sidecar(
    sidecar_path: Path, sidecar_bytes: bytes | None, records: list[Record], manifest_path: Path
) -> DatasetInfo:
    check = _FieldChecker(sidecar_path, None)
    data: dict[str, Any] = {}
    if sidecar_bytes is not None:
        try:
            loaded = json.loads(sidecar_bytes.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            check.fail(None, f"invalid JSON: {err}")
        data = check.json_object("(top level)", loaded)
        check.reject_unknown(data, SIDECAR_FIELDS, prefix="")

    def text_or(name: str, default: str) -> str:
        return check.text(name, data[name]) if name in data else default

    def prose(name: str) -> str:
        value = data.get(name, "")
        if not isinstance(value, str):
            check.fail(name, f"expected a string, got {_json_type(value)}")
        return value

    def text_list_or(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        if name not in data:
            return default
        values = check.text_list(name, data[name])
        if len(set(values)) != len(values):
            check.fail(name, "holds a value twice")
        return values

    used_classes = {record.label for record in records if record.label is not None}
    used_slots: dict[str, None] = {}  # insertion-ordered set
    for record in records:
        for slot, value in (record.labels or {}).items():
            used_classes.add(value)
            used_slots.setdefault(slot)
    classes = text_list_or("classes", tuple(sorted(used_classes)))
    slots = text_list_or("slots", tuple(used_slots))

    label_template = text_or("label_template", "{label}")
    if _checked_fields(check, "label_template", label_template) - {"label"}:
        check.fail("label_template", "may use only the field {label}")
    caption_template = None
    if "caption_template" in data:
        caption_template = check.text("caption_template", data["caption_template"])
        unknown_slots = _checked_fields(check, "caption_template", caption_template) - set(slots)
        if unknown_slots:
            check.fail("caption_template", f"names unknown slots {sorted(unknown_slots)}")
    slot_phrases = {slot: slot.replace("_", " ") for slot in slots}
    for slot, phrase in check.json_object("slot_phrases", data.get("slot_phrases", {})).items():
        if slot not in slots:
            check.fail(f"slot_phrases.{slot}", "not one of the slots")
        slot_phrases[slot] = check.text(f"slot_phrases.{slot}", phrase)

    info = DatasetInfo(
        name=text_or("name", manifest_path.resolve().parent.name),
        description=prose("description"),
        license=prose("license"),
        attribution=prose("attribution"),
        label_template=label_template,
        caption_template=caption_template,
        classes=classes,
        slots=slots,
        slot_phrases=slot_phrases,
    )
    _check_records_against_info(records, info, manifest_path)
    return info


def _checked_fields(check: _FieldChecker, name: str, template: str) -> set[str]:
    try:
        return set(template_fields(template))
    except DataError as err:
        check.fail(name, str(err))


def _check_records_against_info(records: list[Record], info: DatasetInfo, path: Path) -> None:
    """Labels must name known classes and slots, so a typo in one record fails loudly."""
    known_classes = set(info.classes)
    known_slots = set(info.slots)
    needed_slots = set(template_fields(info.caption_template)) if info.caption_template else set()
    for record in records:
        check = _FieldChecker(path, record.line)
        if record.label is not None and record.label not in known_classes:
            check.fail("label", f"{record.label!r} is not a class in {SIDECAR_NAME}")
        if record.labels is None:
            continue
        for slot, value in record.labels.items():
            if slot not in known_slots:
                check.fail(f"labels.{slot}", f"not a slot in {SIDECAR_NAME}")
            if value not in known_classes:
                check.fail(f"labels.{slot}", f"{value!r} is not a class in {SIDECAR_NAME}")
        missing = needed_slots - set(record.labels)
        if missing:
            check.fail("labels", f"misses slots the caption_template needs: {sorted(missing)}")
