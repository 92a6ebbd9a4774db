"""The README a newcomer meets and the docs site behind it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

README = (REPO / "README.md").read_text()


def test_the_readme_is_short_and_its_first_screen_shows_the_ways_to_run():
    assert len(README.splitlines()) <= 150
    first_screen = "\n".join(README.splitlines()[:60])
    for needle in (
        "make train",
        "make test",
        "hydra/launcher=stacked ",
        "hydra/launcher=slurm",
        "hydra/launcher=stacked_slurm",
        "data=table",
        "make uci",
    ):
        assert needle in first_screen, needle


def test_every_link_in_the_readme_reaches_a_file():
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert links and all((REPO / link).exists() for link in links), [k for k in links if not (REPO / k).exists()]
    pages = {p.name for p in (REPO / "docs").glob("*.md")}
    assert {Path(k).name for k in links if k.startswith("docs/") and k.endswith(".md")} <= pages


@pytest.mark.skipif(
    shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
    reason="the docs extra is not installed (make docs installs it)",
)
def test_the_site_builds_strict(tmp_path):
    # --strict: a broken link, a page left out of the nav or an API entry naming a renamed function fails
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    assert "MixtureDensityNetwork" in (tmp_path / "site" / "api" / "index.html").read_text()
