"""The HTML page ``dvc plots show`` and ``dvc plots diff`` fill: offline, laid out to the page's width,
the plots in dvc.yaml's order.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so on a machine without
internet the plots page stays blank. This builds a page with the same three libraries (the
versions DVC asks for) inlined; the repository ships the result as
``.dvc/plots-template.html`` and points DVC at it (``plots.html_template`` in .dvc/config).

The page's style (``STYLE``) also fixes two things of DVC's layout:

- DVC puts the image plots (the book-style PNG figures) after every chart, sorted by folder name
  (``dvc_render.html.render_html`` sorts its renderers by ``_order_image_per_step``: charts first,
  images by directory, step number, file name), so plots/classifier came before plots/pretrain.
  The page holds the plots in a flex box and gives each of dvc.yaml's top-level plots its place
  there (CSS ``order``, one rule per plot id, written from dvc.yaml by ``order_rules``): every
  plot in dvc.yaml's order, each chapter's figures after its charts.
- DVC's image boxes keep each run's image at its full width side by side (``white-space:
  nowrap``), wider than the page in ``plots diff``; the style lets them wrap and scales the images
  down to the page's width.

Rebuild the page with ``python -m scratchgpt.plumbing.vega`` (downloads from the npm registry,
sha256 checked, or from ``$SCRATCHGPT_MIRROR/npm/``); after a change to dvc.yaml's ``plots:`` or
to the style, ``python -m scratchgpt.plumbing.vega --restyle`` rewrites the page around the
libraries it already holds, with no download (tests/test_plots.py checks the page is current).
"""

from __future__ import annotations

import re
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml
from dvc_render.base import Renderer  # DVC's page renderer (a dependency of dvclive)

from scratchgpt.files import write_text
from scratchgpt.plumbing.download import fetch_file, mirror_from_env
from scratchgpt.plumbing.http import HttpClient
from scratchgpt.plumbing.sections.download import FileParams

TEMPLATE = Path(".dvc/plots-template.html")
DVC_YAML = Path("dvc.yaml")
# (npm package file, sha256 of the tarball, the minified build inside it)
LIBRARIES = [
    (
        "vega/-/vega-5.20.2.tgz",
        "d77deab01d6104b1239228720721f93003e60797d2faced7ffdd759fa70f989d",
        "package/build/vega.min.js",
    ),
    (
        "vega-lite/-/vega-lite-5.2.0.tgz",
        "f64ca4745f043447ac86b67dc9e9592ec2b85ac8b8dafc35faf970f142463e4b",
        "package/build/vega-lite.min.js",
    ),
    (
        "vega-embed/-/vega-embed-6.18.2.tgz",
        "93aeee312e92077b0252ef026c0fe0ec8fa430c19825aeada6cd3a6804e68e1b",
        "package/build/vega-embed.min.js",
    ),
]
REGISTRY = "https://registry.npmjs.org/"

# The file types DVC draws as images (dvc_render.image.ImageRenderer.EXTENSIONS); an image plot's
# element id is its path with DVC's "_" for "/" and ".", so it ends in "_png" and so on.
IMAGE_TYPES = ("png", "jpg", "jpeg", "gif", "svg")


def _images(then: str = "") -> str:
    """A CSS selector of the image plots' elements (``then`` appended to each alternative)."""
    return ",\n        ".join(f'.plots > [id$="_{ext}"]{then}' for ext in IMAGE_TYPES)


STYLE = f"""\
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
        /* The plots side by side, wrapping at the page's width, each at its place in dvc.yaml
           (the order rules below); a plot dvc.yaml does not list comes after those it does. */
        .plots {{ display: flex; flex-wrap: wrap; align-items: flex-start; gap: 16px 8px; }}
        .plots > div {{ order: 100000; }}
        /* An image plot (a box per run, each with its image) takes a row of its own; the boxes wrap
           instead of running off the page (DVC writes white-space: nowrap on the element), two to
           a row when there are several, and each image scales down to its box. */
        {_images()} {{ flex: 1 1 100%; min-width: 0; white-space: normal !important; }}
        {_images(" > div")} {{ max-width: calc(100% - 16px); box-sizing: border-box; vertical-align: top; }}
        {_images(" > div:not(:only-of-type)")} {{ max-width: calc(50% - 16px); }}
        .plots img {{ max-width: 100%; height: auto; }}
"""

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- vega 5.20.2, vega-lite 5.2.0, vega-embed 6.18.2 (BSD-3-Clause, (c) the Vega project), inlined
         by scratchgpt.plumbing.vega so that the page needs no network -->
$scripts
    <style>
$style
        /* dvc.yaml's order (written by scratchgpt.plumbing.vega from its top-level plots) */
$order
    </style>
</head>
<body>
    <div class="plots">
    {plot_divs}
    </div>
</body>
</html>
"""
SCRIPT = re.compile(r"^    <script>(.*?)</script>$", re.M | re.S)


def plot_ids(dvc_yaml: Path = DVC_YAML) -> list[str]:
    """The element ids DVC gives dvc.yaml's top-level plots on its page, in dvc.yaml's order: a
    chart's id is its name, an image's its path, each with DVC's "_" for the characters an id
    cannot hold (``dvc_render``'s ``Renderer.remove_special_chars``)."""
    plots = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")).get("plots") or []
    names = [plot if isinstance(plot, str) else next(iter(plot)) for plot in plots]
    return [Renderer.remove_special_chars(name) for name in names]


def order_rules(ids: list[str]) -> str:
    """One CSS rule per plot id: its place in the list."""
    quoted = [plot_id.replace("\\", "\\\\").replace('"', '\\"') for plot_id in ids]
    return "\n".join(f'        .plots > [id="{plot_id}"] {{ order: {n}; }}' for n, plot_id in enumerate(quoted, 1))


def page(scripts: list[str], ids: list[str]) -> str:
    """The page, with ``scripts`` (the libraries' code) inlined and the plots in the order of ``ids``."""
    parts = {
        "$scripts": "\n".join(f"    <script>{code}</script>" for code in scripts),
        "$style": STYLE.rstrip("\n"),
        "$order": order_rules(ids),
    }
    return re.sub(r"\$scripts|\$style|\$order", lambda m: parts[m.group(0)], PAGE)


def inlined_scripts(template: Path = TEMPLATE) -> list[str]:
    """The libraries' code a page built here holds, in its order."""
    scripts = SCRIPT.findall(template.read_text(encoding="utf-8"))
    if len(scripts) != len(LIBRARIES):
        raise ValueError(f"{template}: {len(scripts)} inlined scripts, not {len(LIBRARIES)}; rebuild it with downloads")
    return scripts


def build(out: Path = TEMPLATE, client: HttpClient | None = None, dvc_yaml: Path = DVC_YAML) -> Path:
    client = client or HttpClient()
    scripts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, sha256, member in LIBRARIES:
            spec = FileParams(name=f"npm/{name}", sha256=sha256, urls=[REGISTRY + name])
            archive = Path(tmp) / Path(name).name
            fetch_file(spec, archive, client, mirror_from_env())
            with tarfile.open(archive) as tar:
                code = tar.extractfile(member).read().decode("utf-8")  # type: ignore[union-attr]
            if "</script" in code:
                code = code.replace("</script", "<\\/script")
            scripts.append(code)
    write_text(out, page(scripts, plot_ids(dvc_yaml)))
    return out


def restyle(out: Path = TEMPLATE, dvc_yaml: Path = DVC_YAML) -> Path:
    """Rewrite the page around the libraries it holds: the current style and dvc.yaml's order."""
    write_text(out, page(inlined_scripts(out), plot_ids(dvc_yaml)))
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--restyle" in args:
        args.remove("--restyle")
        print(restyle(Path(args[0]) if args else TEMPLATE))
    else:
        print(build(Path(args[0]) if args else TEMPLATE))
