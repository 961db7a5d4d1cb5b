"""The image catalog: which image, pinned by digest, runs each supported PostgreSQL major version.

A floating tag (``postgres:17``) changes under a running fleet whenever the publisher pushes; a
digest never does. The catalog is a settings file (JSON) so that a minor upgrade is a reviewed
change of that file, applied by the ``RollOutImageCatalog`` orchestration, and never a side effect
of a node pulling again. The default catalog ships with the package (``toygres/image-catalog.json``);
``TOYGRES_IMAGE_CATALOG_FILE`` points at another one (e.g. with digests of a mirror).

References are ``<repository>:<tag>@<digest>``: the repository comes from the settings
(``TOYGRES_KUBERNETES__IMAGE_REPOSITORY``, default ``postgres``), so a registry mirror that keeps
digests (``az acr import`` does) needs no catalog of its own. The tag is informational for people
and tools; the runtime pulls by digest.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from toygres.models import POSTGRES_VERSIONS, StrictModel, validation_errors

DEFAULT_CATALOG = "image-catalog.json"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class CatalogError(ValueError):
    """The catalog file is missing or invalid; the message names the file and the entry."""


class ImageVersion(StrictModel):
    """One entry: the tag people read and the digest the runtime pulls."""

    tag: str
    digest: str

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not _TAG_RE.match(value):
            raise PydanticCustomError("tag", "tag must be an image tag such as '17.6'")
        return value

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _DIGEST_RE.match(value):
            raise PydanticCustomError(
                "digest", "digest must be 'sha256:' followed by 64 lowercase hex digits (a pinned image)"
            )
        return value


class ImageCatalog(StrictModel):
    """Major version -> pinned image. Only versions Toygres supports; each tag of its own major."""

    description: str | None = None
    images: dict[str, ImageVersion] = Field(min_length=1)

    @model_validator(mode="after")
    def _versions(self) -> ImageCatalog:
        for major, entry in self.images.items():
            if major not in POSTGRES_VERSIONS:
                raise PydanticCustomError(
                    "catalog_version",
                    f"images.{major}: not a supported major version ({', '.join(POSTGRES_VERSIONS)})",
                )
            if entry.tag != major and not entry.tag.startswith(f"{major}."):
                raise PydanticCustomError(
                    "catalog_tag", f"images.{major}: tag {entry.tag!r} is not a PostgreSQL {major} release"
                )
        return self

    @property
    def versions(self) -> tuple[str, ...]:
        """The major versions with an image, in ascending order."""
        return tuple(sorted(self.images, key=int))

    def reference(self, major: str, repository: str) -> str:
        """``<repository>:<tag>@<digest>``; KeyError when the catalog has no image for ``major``."""
        entry = self.images[major]
        return f"{repository}:{entry.tag}@{entry.digest}"


def load_image_catalog(path: Path | None = None) -> ImageCatalog:
    """The catalog in ``path``, or the one shipped with Toygres; :class:`CatalogError` when invalid."""
    where = str(path) if path is not None else f"toygres/{DEFAULT_CATALOG}"
    try:
        if path is None:
            text = resources.files("toygres").joinpath(DEFAULT_CATALOG).read_text(encoding="utf-8")
        else:
            text = path.expanduser().read_text(encoding="utf-8")
        return ImageCatalog.model_validate(json.loads(text))
    except OSError as exc:
        raise CatalogError(f"cannot read the image catalog {where}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise CatalogError(f"the image catalog {where} is not JSON: {exc.msg} (line {exc.lineno})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{e['field']}: {e['message']}" for e in validation_errors(exc))
        raise CatalogError(f"the image catalog {where} is not valid: {problems}") from None
