"""Recipes: a named set of LoRA files with weights, plus generation defaults (CFG, steps, sampler, style).

Recipes live as one YAML (``.yaml``/``.yml``) or JSON (``.json``) file each in ``settings.recipes_dir``, named
after the recipe (``watercolor.yaml`` holds recipe ``watercolor``). A LoRA is named either by a file name inside
``settings.loras_dir`` (``"detail.safetensors"``, or ``"detail"`` for short) or by an absolute path.

:class:`RecipeStore` reads and writes them. A broken file never hides the others: :meth:`RecipeStore.scan`
returns the good recipes and a :class:`~imageloop.errors.RecipeError` for each bad file, naming the file and the
field at fault.
"""

from __future__ import annotations

import builtins
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imageloop.config import Settings
from imageloop.errors import ConflictError, RecipeError, UnknownNameError
from imageloop.files import atomic_write_text

RECIPE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
RECIPE_SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".json")
LORA_SUFFIX = ".safetensors"
# The file a diffusers-format LoRA folder holds (what ``save_lora_weights`` writes): private LoRAs and
# Diffusion-DPO versions are such folders.
LORA_FILE = "pytorch_lora_weights.safetensors"
MAX_LORA_WEIGHT = 4.0
MAX_LORAS_PER_RECIPE = 16


class LoraWeight(BaseModel):
    """One LoRA of a recipe: which file, and how strongly it applies (0 = off, negative = inverted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(
        min_length=1,
        max_length=1024,
        description="File name inside the data dir's loras/ folder (the .safetensors suffix may be left off), "
        "or an absolute path.",
    )
    weight: float = Field(default=1.0, ge=-MAX_LORA_WEIGHT, le=MAX_LORA_WEIGHT, description="Adapter scale.")

    @field_validator("file")
    @classmethod
    def _check_file(cls, value: str) -> str:
        path = Path(value)
        if path.is_absolute():
            return value
        if ".." in re.split(r"[\\/]", value):
            raise ValueError("a LoRA name inside loras/ may not contain '..'; use an absolute path for other folders")
        return value


class Recipe(BaseModel):
    """A named, reusable look: LoRAs with weights plus optional generation defaults.

    Unset defaults (``None``) leave the request's own values alone. ``scheduler`` is an A1111 sampler name and
    ``style`` a style-preset name; both are checked by the engine and the prompt presets, not here.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=RECIPE_NAME_PATTERN, description="Slug: lowercase letters, digits, '-' and '_'.")
    description: str = Field(default="", max_length=2000)
    loras: list[LoraWeight] = Field(default_factory=builtins.list, max_length=MAX_LORAS_PER_RECIPE)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0, description="Classifier-free guidance.")
    steps: int | None = Field(default=None, ge=1, le=1000, description="Denoising steps.")
    scheduler: str | None = Field(default=None, min_length=1, max_length=64, description="A1111 sampler name.")
    style: str | None = Field(default=None, min_length=1, max_length=64, description="Style preset name.")

    @model_validator(mode="after")
    def _unique_loras(self) -> Recipe:
        seen: set[str] = set()
        for lora in self.loras:
            if lora.file in seen:
                raise ValueError(f"LoRA {lora.file!r} is listed twice; give it one combined weight")
            seen.add(lora.file)
        return self


def resolve_lora_path(file: str, loras_dir: Path) -> Path:
    """The path a recipe's LoRA ``file`` refers to; RecipeError naming it if it is not an existing .safetensors."""
    path = Path(file).expanduser()
    if not path.is_absolute():
        path = loras_dir / file
        if path.suffix.lower() != LORA_SUFFIX and not path.exists():
            path = path.with_name(path.name + LORA_SUFFIX)
    if path.suffix.lower() != LORA_SUFFIX:
        raise RecipeError(f"LoRA {file!r}: only {LORA_SUFFIX} files are accepted (pickled .ckpt/.pt can run code)")
    if not path.is_file():
        raise RecipeError(f"LoRA {file!r} not found (looked for {path})")
    return path


@dataclass(frozen=True)
class RecipeScan:
    """What :meth:`RecipeStore.scan` found: the usable recipes (by name) and one error per broken file."""

    recipes: dict[str, Recipe] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)
    problems: builtins.list[RecipeError] = field(default_factory=builtins.list)


class RecipeStore:
    """Recipes stored as files in ``settings.recipes_dir``; LoRA names resolve against ``settings.loras_dir``."""

    def __init__(self, settings: Settings) -> None:
        self.recipes_dir = settings.recipes_dir
        self.loras_dir = settings.loras_dir

    # Reading -------------------------------------------------------------------------------------------------

    def scan(self) -> RecipeScan:
        """Read every recipe file; each malformed file, duplicate name or missing LoRA becomes one problem."""
        scan = RecipeScan()
        by_name: dict[str, builtins.list[Path]] = {}
        for path in self._recipe_files():
            by_name.setdefault(path.stem, []).append(path)
        for name, paths in sorted(by_name.items()):
            if len(paths) > 1:
                listed = ", ".join(str(p) for p in paths)
                scan.problems.append(RecipeError(f"recipe {name!r} is defined by several files ({listed}); keep one"))
                continue
            try:
                recipe = parse_recipe_file(paths[0])
                self.check_loras(recipe, paths[0])
            except RecipeError as exc:
                scan.problems.append(exc)
                continue
            scan.recipes[name] = recipe
            scan.paths[name] = paths[0]
        return scan

    def list(self) -> builtins.list[Recipe]:
        """The usable recipes, sorted by name (broken files are skipped; :meth:`scan` reports them)."""
        return builtins.list(self.scan().recipes.values())

    def names(self) -> builtins.list[str]:
        """Names of the usable recipes, sorted."""
        return sorted(self.scan().recipes)

    def get(self, name: str) -> Recipe:
        """The recipe ``name``, with its LoRA files checked to exist.

        Raises UnknownNameError (listing the usable names) if there is none, RecipeError naming the file and field
        if its file is malformed or names a missing LoRA.
        """
        paths = self._paths_for(name)
        if not paths:
            raise UnknownNameError("recipe", name, self.names())
        if len(paths) > 1:
            listed = ", ".join(str(p) for p in paths)
            raise RecipeError(f"recipe {name!r} is defined by several files ({listed}); keep one")
        recipe = parse_recipe_file(paths[0])
        self.check_loras(recipe, paths[0])
        return recipe

    def path_of(self, name: str) -> Path:
        """The file that holds recipe ``name``; UnknownNameError if none does."""
        paths = self._paths_for(name)
        if not paths:
            raise UnknownNameError("recipe", name, self.names())
        return paths[0]

    def check_loras(self, recipe: Recipe, source: Path | None = None) -> builtins.list[Path]:
        """Resolve every LoRA of ``recipe`` to its file; RecipeError naming the first one that is missing."""
        out: builtins.list[Path] = []
        for lora in recipe.loras:
            try:
                out.append(resolve_lora_path(lora.file, self.loras_dir))
            except RecipeError as exc:
                where = f" ({source})" if source is not None else ""
                raise RecipeError(f"recipe {recipe.name!r}{where}: {exc.message}") from exc
        return out

    # Writing -------------------------------------------------------------------------------------------------

    def save(self, recipe: Recipe, *, overwrite: bool = True) -> Path:
        """Write ``recipe`` atomically (temp file + rename) and return its file.

        An existing file keeps its format (YAML or JSON); a new recipe is written as YAML. Its LoRA files must
        exist (RecipeError names the missing one). With ``overwrite=False`` an existing recipe is a ConflictError.
        """
        self.check_loras(recipe)
        existing = self._paths_for(recipe.name)
        if existing and not overwrite:
            raise ConflictError(f"recipe {recipe.name!r} already exists ({existing[0]})")
        if len(existing) > 1:
            listed = ", ".join(str(p) for p in existing)
            raise RecipeError(f"recipe {recipe.name!r} is defined by several files ({listed}); keep one")
        path = existing[0] if existing else self.recipes_dir / f"{recipe.name}.yaml"
        atomic_write_text(path, dump_recipe(recipe, json_format=path.suffix == ".json"))
        return path

    def delete(self, name: str) -> None:
        """Remove recipe ``name``'s file(s); UnknownNameError (listing the known names) if there is none."""
        paths = self._paths_for(name)
        if not paths:
            raise UnknownNameError("recipe", name, self.names())
        for path in paths:
            path.unlink(missing_ok=True)

    # Internals -----------------------------------------------------------------------------------------------

    def _recipe_files(self) -> builtins.list[Path]:
        if not self.recipes_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.recipes_dir.iterdir()
            if p.suffix in RECIPE_SUFFIXES and not p.name.startswith(".") and p.is_file()
        )

    def _paths_for(self, name: str) -> builtins.list[Path]:
        # Only a valid slug can name a file, which also keeps '../x' from ever reaching the file system.
        if not _is_recipe_name(name):
            return []
        return [p for p in (self.recipes_dir / f"{name}{s}" for s in RECIPE_SUFFIXES) if p.is_file()]


def parse_recipe_file(path: Path) -> Recipe:
    """Parse one recipe file; RecipeError naming the file (and the field, for a schema problem) if it is bad.

    The recipe's ``name`` may be left out of the file (the file name supplies it); if given it must match.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe file {path}: cannot be read: {exc}") from exc
    data = _parse_mapping(path, text)
    name = data.setdefault("name", path.stem)
    if name != path.stem:
        raise RecipeError(f"recipe file {path}: name: {name!r} does not match the file name {path.stem!r}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"recipe file {path}: {_describe_validation(exc)}") from exc


def recipe_from_fields(data: dict[str, Any]) -> Recipe:
    """Build a Recipe from plain fields (an API body, CLI options); RecipeError naming the bad field."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(f"recipe: {_describe_validation(exc)}") from exc


def _parse_mapping(path: Path, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"recipe file {path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"recipe file {path}: expected a mapping of fields, got {type(data).__name__}")
    return {str(key): value for key, value in data.items()}


def _describe_validation(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "recipe"
        problems.append(f"{where}: {err['msg']}")
    return "; ".join(problems)


def _is_recipe_name(name: str) -> bool:
    return re.fullmatch(RECIPE_NAME_PATTERN, name) is not None


def dump_recipe(recipe: Recipe, *, json_format: bool = False) -> str:
    """The text of a recipe file: YAML (default) or JSON, unset fields left out."""
    data = recipe.model_dump(mode="json", exclude_none=True)
    if json_format:
        return json.dumps(data, indent=2) + "\n"
    return str(yaml.dump(data, Dumper=_RecipeDumper, sort_keys=False, allow_unicode=True))


# YAML reads these characters in a plain or single-quoted scalar as line breaks and folds them; written raw (as
# allow_unicode does) a description holding one would not read back the same.
_YAML_LINE_BREAKS = frozenset("\x85\u2028\u2029")


class _RecipeDumper(yaml.SafeDumper):
    """SafeDumper that double-quotes (and so escapes) strings holding a YAML line-break character."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = '"' if _YAML_LINE_BREAKS.intersection(text) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_RecipeDumper.add_representer(str, _represent_str)

