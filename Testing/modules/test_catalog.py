"""The Extensions Index entry: ScanAI.json against Slicer's catalog-entry schema, the CMake metadata the Index's
validator reads (``scripts/check_description_files.py``), and one repository URL everywhere.

The URL's single source is :data:`scanai.REPOSITORY_URL`; CMakeLists.txt keeps it literally (the validator reads the
``set(EXTENSION_...)`` lines as text), so these tests hold CMake, the catalog entry and the module help texts to it.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest
import slicer_harness

from scanai import REPOSITORY_URL

HOME = Path(__file__).resolve().parents[2]
MODULES = ["MotionCorrection", "ParametricPET", "KSpaceCalibration", "ChestQC"]

#: Slicer/Slicer ``Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json``: required keys, and every allowed key
#: with its JSON type (the schema has ``additionalProperties: false``).
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
REQUIRED = {"$schema", "category", "scm_url"}
ALLOWED = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
           "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool,
           "tier": int}
#: Some of the categories the Index's validator accepts (``ACCEPTED_EXTENSION_CATEGORIES``), those that fit ScanAI.
ACCEPTED_CATEGORIES = {"Analysis", "Cardiac", "Informatics", "Nuclear Medicine", "Quantification", "Registration",
                       "Segmentation", "Sequences", "Utilities"}
#: "First Last (Org)", comma-separated (Slicer's convention for contributors).
CONTRIBUTOR = re.compile(r"[^(),]+ \([^(),]+\)")
GITHUB_URL = re.compile(r"https?://(?:www\.)?(?:github\.com|raw\.githubusercontent\.com)/([\w.-]+)/([\w.-]+)")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".json", ".toml", ".cfg", ".ini", ".yml", ".yaml", ".ui", ".cmake", ".in"}
SKIPPED_FOLDERS = {".git", ".venv", ".venv-slicer", "build", "demo_output", "bench_output", "__pycache__",
                   ".pytest_cache", ".ruff_cache", "scanai.egg-info"}


def _cmake() -> str:
    return re.sub(r"^\s*#[^\n]*", "", (HOME / "CMakeLists.txt").read_text(), flags=re.MULTILINE)  # comment lines


def _cmake_value(key: str) -> str:
    match = re.search(rf'set\s*\(EXTENSION_{key}\s*"([^"]*)"\s*\)', _cmake())
    assert match, f"EXTENSION_{key} is not set in CMakeLists.txt"
    return match.group(1)


def _project_name() -> str:
    match = re.search(r"project\s*\(\s*([^\s)]+)", _cmake(), re.IGNORECASE)  # as the validator parses it
    assert match, "CMakeLists.txt has no project()"
    return match.group(1).strip("\"'")


def _catalog_path() -> Path:
    return HOME / f"{_project_name()}.json"


def _catalog() -> dict:
    return json.loads(_catalog_path().read_text(encoding="utf-8"))


def _raw_prefix() -> str:
    """Where the raw files of the catalogued revision are served (``scm_revision``, a branch)."""
    owner_name = REPOSITORY_URL.removeprefix("https://github.com/")
    return f"https://raw.githubusercontent.com/{owner_name}/{_catalog()['scm_revision']}/"


def _github_slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_repository_url_is_a_github_repository_named_slicer_something():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY_URL), REPOSITORY_URL
    assert REPOSITORY_URL.rsplit("/", 1)[1].startswith("Slicer"), "the Index asks for a repository named Slicer<Name>"


def test_catalog_entry_is_named_after_the_cmake_project_and_the_extension_name_is_valid():
    name = _project_name()
    assert _catalog_path().is_file(), f"the catalog entry must be {name}.json (the CMake project name)"
    assert not name.lower().startswith("slicer"), "the Extensions Index rejects extension names starting with Slicer"


def test_catalog_entry_follows_the_schema():
    raw = _catalog_path().read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n"), "the catalog entry must use LF line endings"
    entry = _catalog()
    assert REQUIRED <= set(entry), f"missing required keys {sorted(REQUIRED - set(entry))}"
    assert set(entry) <= set(ALLOWED), f"keys the schema does not allow: {sorted(set(entry) - set(ALLOWED))}"
    for key, value in entry.items():
        assert type(value) is ALLOWED[key], f"{key} must be a {ALLOWED[key].__name__}, not {type(value).__name__}"
    assert entry["$schema"] == SCHEMA_URL
    assert all(isinstance(item, str) for item in entry.get("build_dependencies", []))
    assert entry.get("scm_type", "git") in {"git", "local"}
    assert 1 <= entry.get("tier", 1) <= 5


def test_catalog_entry_agrees_with_cmake_and_the_repository_url():
    entry = _catalog()
    assert entry["scm_url"] == REPOSITORY_URL
    assert entry["scm_revision"] == "main"
    assert entry["category"] == _cmake_value("CATEGORY")
    assert entry["category"] in ACCEPTED_CATEGORIES
    depends = _cmake_value("DEPENDS")
    assert entry.get("build_dependencies", []) == ([] if depends == "NA" else depends.split())
    assert entry["build_dependencies"] == ["PyTorch"]


def test_contributors_are_name_and_organisation():
    contributors = [c.strip() for c in _cmake_value("CONTRIBUTORS").split(",")]
    bad = [c for c in contributors if not CONTRIBUTOR.fullmatch(c)]
    assert not bad, f'EXTENSION_CONTRIBUTORS entries must read "Name (Org)": {bad}'


def test_homepage_is_the_repository():
    assert _cmake_value("HOMEPAGE") in {REPOSITORY_URL, f"{REPOSITORY_URL}#readme"}


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG image"
    return struct.unpack(">II", head[16:24])


def test_icon_and_screenshot_urls_name_files_of_this_repository():
    prefix = _raw_prefix()
    icon = _cmake_value("ICONURL")
    screenshots = _cmake_value("SCREENSHOTURLS").split()
    assert screenshots, "EXTENSION_SCREENSHOTURLS is empty"
    for url in [icon, *screenshots]:
        assert url.startswith(prefix), f"{url} is not a raw URL of {REPOSITORY_URL} at {prefix}"
        path = HOME / url.removeprefix(prefix)
        assert path.is_file(), f"{url} names {path.relative_to(HOME)}, which is not in the repository"
        _png_size(path)
    assert _png_size(HOME / icon.removeprefix(prefix)) == (128, 128), "the extension icon must be 128x128"


def _text_files() -> list[Path]:
    files = []
    for folder, subfolders, names in os.walk(HOME):
        subfolders[:] = [s for s in subfolders if s not in SKIPPED_FOLDERS]
        files += [Path(folder) / n for n in names if Path(n).suffix in TEXT_SUFFIXES or n in {"Makefile"}]
    return files


def test_every_link_to_the_repository_uses_the_single_url():
    """A URL of a GitHub repository named like this one (…ScanAI) anywhere in the sources is the repository URL."""
    owner, name = REPOSITORY_URL.removeprefix("https://github.com/").split("/")
    wrong = []
    for path in _text_files():
        for match in GITHUB_URL.finditer(path.read_text(encoding="utf-8", errors="ignore")):
            found = (match.group(1), match.group(2).rstrip(".").removesuffix(".git"))  # "...ScanAI." ends a sentence
            if "scanai" in found[1].lower() and found != (owner, name):
                wrong.append(f"{path.relative_to(HOME)}: {match.group(0)}")
    assert not wrong, f"links to another repository than {REPOSITORY_URL}: {wrong}"


@pytest.mark.parametrize("name", MODULES)
def test_module_help_links_to_its_readme_section_in_the_repository(name):
    if not slicer_harness.available():
        pytest.skip(slicer_harness.SKIP_REASON)
    help_text = slicer_harness.load_module(name)._harness_parent.helpText
    links = re.findall(r'href="([^"]+)"', help_text)
    assert links, f"{name}'s help text has no link"
    documentation = [link for link in links if link.startswith(f"{REPOSITORY_URL}#")]
    assert documentation, f"{name}'s help text does not link to {REPOSITORY_URL}: {links}"
    headings = {_github_slug(line.lstrip("#")) for line in (HOME / "README.md").read_text().splitlines()
                if line.startswith("#")}
    for link in documentation:
        assert link.split("#", 1)[1] in headings, f"{link}: README.md has no section with that anchor"
    assert "SlicerScanAI" not in (HOME / name / f"{name}.py").read_text(), "use scanai.REPOSITORY_URL"
